"""Payload signature filter: [[filter]] rules from the config and
`ferryctl filter add|del|list`, with real curl requests through ferryd to the pods.

The module's ferryd starts with one config rule dropping requests that contain "GET /evil";
the pods answer any path with their name."""
import json
import re
import subprocess
from pathlib import Path

from conftest import FERRYD, VIP, config_toml, curl_names, slow_stream

FERRY_TOML = """
[[filter]]
name = "evil"
pattern = "GET /evil"
action = "drop"
depth = 256
protocol = "TCP"
"""

METRICS = "http://127.0.0.1:9100/metrics"


def rules(ferry):
    r = ferry.ferryctl("filter", "list", "-o", "json")
    assert r.returncode == 0, r.stderr
    return {x["name"]: x for x in json.loads(r.stdout)["rules"]}


def drops(ferry, reason="filter_drop"):
    return ferry.stats()["drops"][reason]


def metric_hits(ferry, rule, action):
    r = ferry.netns(ferry.node_ns, ["curl", "-sS", "-m", "5", "--fail", METRICS])
    assert r.returncode == 0, r.stderr
    m = re.search(r'^ferry_filter_hits_total\{rule="%s",action="%s"\} (\S+)$' % (rule, action),
                  r.stdout, re.M)
    return None if m is None else float(m.group(1))


def curl_fails(ferry, path):
    """True when curl times out (28): the request never reached a pod."""
    r = ferry.client(f"curl -sS -m 2 http://{VIP}{path}; echo rc=$?", timeout=10)
    return r.stdout.strip().endswith("rc=28"), r.stdout + r.stderr


def test_config_rule_drops_the_pattern_and_passes_the_rest(ferry):
    assert rules(ferry)["evil"]["source"] == "config"
    before = drops(ferry)
    # /good: answered by a pod; /evil: the request segment is dropped, curl times out.
    assert curl_names(ferry, 3, url=f"http://{VIP}/good")
    failed, out = curl_fails(ferry, "/evil")
    assert failed, out
    # The request and its retransmissions (which may go on after curl gave up: read the
    # drops on both sides of the hits).
    low = drops(ferry) - before
    evil = rules(ferry)["evil"]
    high = drops(ferry) - before
    assert 1 <= low <= evil["hits"] <= high, (low, evil, high)
    assert metric_hits(ferry, "evil", "drop") >= evil["hits"]
    # Depth: the pattern in a header is dropped while it lies within the rule's 256 bytes,
    # and answered once 300 bytes of another header push it past them.
    r = ferry.client(f"curl -sS -m 2 -H 'X-Q: GET /evil' http://{VIP}/ok", timeout=10)
    assert r.returncode != 0, r.stdout
    r = ferry.client(f"curl -sS -m 3 -H 'X-Pad: {'p' * 300}' -H 'X-Q: GET /evil' http://{VIP}/ok",
                     timeout=10)
    assert r.returncode == 0 and r.stdout.startswith("my-app-"), r.stdout + r.stderr


def test_count_rule_hits_follow_real_requests_and_del_removes_it(ferry):
    r = ferry.ferryctl("filter", "add", "php", "--pattern", r"GET /[a-z]+\.php\?id=[0-9]+",
                       "--action", "count", "--service", "default/my-service", "--port", "80")
    assert r.returncode == 0, r.stderr
    assert "filter php added: count" in r.stdout
    assert rules(ferry)["php"]["hits"] == 0
    names = curl_names(ferry, 5, url=f"http://{VIP}/item.php?id=42")
    assert len(names) == 5  # counted, not dropped
    curl_names(ferry, 2, url=f"http://{VIP}/item.html")
    php = rules(ferry)["php"]
    assert php["hits"] == 5 and php["source"] == "socket"
    assert php["scope"] == "svc default/my-service :80"
    assert metric_hits(ferry, "php", "count") == 5
    table = ferry.ferryctl("filter", "list").stdout
    assert re.search(r"^php\s+count\s+svc default/my-service :80\s+512\s+5\s+socket\s", table,
                     re.M), table

    r = ferry.ferryctl("filter", "del", "php")
    assert r.returncode == 0 and "filter php deleted (5 hits)" in r.stdout, r.stdout + r.stderr
    assert "php" not in rules(ferry)
    curl_names(ferry, 2, url=f"http://{VIP}/item.php?id=42")
    assert metric_hits(ferry, "php", "count") is None
    # A new rule that takes the freed slot starts from zero.
    assert ferry.ferryctl("filter", "add", "php2", "--pattern", "nomatch-xyz").returncode == 0
    assert rules(ferry)["php2"]["hits"] == 0
    assert ferry.ferryctl("filter", "del", "php2").returncode == 0


def test_rules_change_while_traffic_flows(ferry):
    # A connection in progress (the pod streams for 9 s) while rules are added and deleted:
    # each change publishes a new snapshot; the stream goes on to its end, and requests made
    # meanwhile see the rules of the moment.
    with slow_stream(ferry, seconds=9):
        for i in range(3):
            assert ferry.ferryctl("filter", "add", f"tmp{i}", "--pattern", f"/tmp{i}x").returncode == 0
            failed, out = curl_fails(ferry, f"/tmp{i}x")
            assert failed, out
            assert curl_names(ferry, 1, url=f"http://{VIP}/fine")
            assert ferry.ferryctl("filter", "del", f"tmp{i}").returncode == 0
            assert curl_names(ferry, 1, url=f"http://{VIP}/tmp{i}x")


def test_bad_pattern_is_refused_with_hyperscans_message(ferry):
    before = rules(ferry)
    r = ferry.ferryctl("filter", "add", "broken", "--pattern", "GET /(evil")
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.startswith('error: filter "broken": pattern "GET /(evil": Missing close '
                               'parenthesis'), r.stderr
    r = ferry.ferryctl("filter", "add", "evil", "--pattern", "x")
    assert r.returncode == 1 and "already exists" in r.stderr, r.stderr
    assert rules(ferry).keys() == before.keys()
    # The config rule still drops: nothing was half-applied.
    failed, out = curl_fails(ferry, "/evil")
    assert failed, out


def test_reload_applies_edited_filter_tables(ferry):
    # [[filter]] tables edited in the config apply with `ferryctl reload`, no restart; a bad
    # pattern there is refused whole; removing the table removes the rule.
    config_before = ferry.config.read_text()
    admin = '\n[[filter]]\nname = "admin"\npattern = "GET /%s"\n'
    try:
        ferry.config.write_text(config_before + admin % "admin")
        r = ferry.ferryctl("-o", "json", "reload")
        assert r.returncode == 0, r.stderr + ferry.log()
        result = json.loads(r.stdout)
        assert result["restart_needed"] == [], result
        actions = {(c["kind"], c["name"]): c["action"] for c in result["changes"]}
        assert actions[("Filter", "admin")] == "created", actions
        assert actions[("Filter", "evil")] == "unchanged", actions
        assert rules(ferry)["admin"]["source"] == "config"
        failed, out = curl_fails(ferry, "/admin")
        assert failed, out
        assert curl_names(ferry, 2, url=f"http://{VIP}/fine")

        ferry.config.write_text(config_before + admin % "(admin")
        r = ferry.ferryctl("reload")
        assert r.returncode == 1, r.stdout
        assert "admin" in r.stderr and "Missing close parenthesis" in r.stderr, r.stderr
        assert rules(ferry)["admin"]["pattern"] == "GET /admin"
    finally:
        ferry.config.write_text(config_before)
    r = ferry.ferryctl("-o", "json", "reload")
    assert r.returncode == 0, r.stderr
    actions = {(c["kind"], c["name"]): c["action"] for c in json.loads(r.stdout)["changes"]}
    assert actions[("Filter", "admin")] == "deleted", actions
    assert "admin" not in rules(ferry) and "evil" in rules(ferry)
    assert curl_names(ferry, 2, url=f"http://{VIP}/admin")
    assert "change: filter admin created (source: file)" in ferry.log()


def test_deleting_the_config_rule_restores_traffic(ferry):
    r = ferry.ferryctl("filter", "del", "evil")
    assert r.returncode == 0, r.stderr
    before = drops(ferry)
    assert curl_names(ferry, 2, url=f"http://{VIP}/evil")
    assert drops(ferry) == before
    r = ferry.ferryctl("filter", "list")
    assert r.returncode == 0 and r.stdout == "No filter rules.\n", r.stdout


def test_a_config_with_a_bad_pattern_is_refused(tmpdir_path):
    d = Path(tmpdir_path)
    (d / "m").mkdir()
    path = d / "ferry.toml"
    path.write_text(config_toml(d.name, d, d / "m", extra='[[filter]]\nname = "ok"\npattern = "a"\n'
                                '[[filter]]\nname = "oops"\npattern = "(a"\n'))
    r = subprocess.run([str(FERRYD), "--config", str(path), "--check"], capture_output=True,
                       text=True, timeout=10)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert f"{path}: filter[1] (oops): pattern: Missing close parenthesis" in out, out
