"""ferryd refuses a bad config or manifest before touching any device: non-zero exit within
seconds, a message naming the file and the key or field, and no control socket left behind.
No network needed: a refused config never gets as far as opening its ports (except for the
live reload test, which uses the module's running ferryd)."""
import os
import signal
import subprocess
import time

import pytest

from conftest import FERRYD, SEED_SERVICE, config_toml, my_service_slice


def write_config(d, extra="", replace=None, manifests=None):
    mdir = d / "manifests"
    mdir.mkdir(exist_ok=True)
    for name, text in (manifests or {"10-svc.yaml": SEED_SERVICE + "---\n" + my_service_slice()}
                       ).items():
        (mdir / name).write_text(text)
    # EAL file prefix = the temp dir's name: the tmpdir_path fixture removes its run dir.
    text = config_toml(d.name, d, mdir, extra=extra)
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    path = d / "ferry.toml"
    path.write_text(text)
    return path


def run_ferryd(*args, timeout=10):
    t0 = time.monotonic()
    r = subprocess.run([str(FERRYD), *args], capture_output=True, text=True, timeout=timeout)
    return r, time.monotonic() - t0


def refused(d, path, *must_mention):
    r, elapsed = run_ferryd("--config", str(path))
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert elapsed < 5, elapsed
    for word in must_mention:
        assert word in out, f"{word!r} not in: {out}"
    assert not (d / "ferry.sock").exists(), os.listdir(d)
    return out


def test_unknown_key(tmpdir_path):
    path = write_config(tmpdir_path, replace={"idle_sleep_us = 20": "idle_sleep_us = 20\nturbo = true"})
    refused(tmpdir_path, path, str(path), "dataplane.turbo", "unknown key")


def test_unknown_table(tmpdir_path):
    path = write_config(tmpdir_path, extra="[tuning]\nfast = 1\n")
    refused(tmpdir_path, path, str(path), "tuning", "unknown key")


@pytest.mark.parametrize("bad", ["198.18.0.300/24", "198.18.0.254/33", "fe0"])
def test_bad_port_address(tmpdir_path, bad):
    path = write_config(tmpdir_path, replace={'"198.18.0.254/24"': f'"{bad}"'})
    refused(tmpdir_path, path, str(path), "port[0].address", bad)


def test_bad_value_type(tmpdir_path):
    path = write_config(tmpdir_path, replace={"idle_sleep_us = 20": 'idle_sleep_us = "fast"'})
    refused(tmpdir_path, path, str(path), "dataplane.idle_sleep_us", "integer")


def test_toml_syntax_error(tmpdir_path):
    path = write_config(tmpdir_path, extra="[conntrack\n")
    refused(tmpdir_path, path, str(path))


def test_broken_service_in_manifest_dir(tmpdir_path):
    broken = SEED_SERVICE.replace("port: 80", 'port: "abc"')
    assert broken != SEED_SERVICE
    path = write_config(tmpdir_path, manifests={"10-svc.yaml": broken})
    manifest = tmpdir_path / "manifests" / "10-svc.yaml"
    refused(tmpdir_path, path, str(manifest), "my-service", "spec.ports[0].port", "abc")


def test_broken_endpointslice_in_manifest_dir(tmpdir_path):
    slice_ = my_service_slice().replace('"198.18.1.12"', '"198.18.1.999"')
    path = write_config(tmpdir_path, manifests={"10-svc.yaml": SEED_SERVICE,
                                                "20-slice.yaml": slice_})
    manifest = tmpdir_path / "manifests" / "20-slice.yaml"
    refused(tmpdir_path, path, str(manifest), "EndpointSlice", "my-service-abc12",
            "198.18.1.999")


def test_missing_config_file(tmpdir_path):
    missing = tmpdir_path / "nope.toml"
    r, elapsed = run_ferryd("--config", str(missing))
    assert r.returncode != 0 and str(missing) in r.stdout + r.stderr and elapsed < 5


def test_check_accepts_good_config(tmpdir_path):
    path = write_config(tmpdir_path)
    r, elapsed = run_ferryd("--config", str(path), "--check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{path}: ok" in r.stdout
    assert not (tmpdir_path / "ferry.sock").exists()


def test_check_refuses_broken_manifest(tmpdir_path):
    broken = SEED_SERVICE.replace("port: 80", 'port: "abc"')
    path = write_config(tmpdir_path, manifests={"10-svc.yaml": broken})
    r, _ = run_ferryd("--config", str(path), "--check")
    assert r.returncode != 0
    assert "spec.ports[0].port" in r.stdout + r.stderr


def test_bad_command_line():
    r, _ = run_ferryd("--frobnicate")
    assert r.returncode == 2 and "usage" in r.stderr


# Issue 16 item 3: a value nested 100,000 deep (200 KB) overflowed toml11's stack.
DEEP = "\n[node]\nname = " + "[" * 100000 + "]" * 100000 + "\n"


def test_check_refuses_a_deeply_nested_config(tmpdir_path):
    path = write_config(tmpdir_path, extra=DEEP)
    r, elapsed = run_ferryd("--config", str(path), "--check")
    out = r.stdout + r.stderr
    assert r.returncode == 1, (r.returncode, out[-2000:])  # not killed by a signal
    assert f"{path}:" in out and "nested more than 32 levels deep" in out, out[-2000:]


def test_live_reload_of_a_deeply_nested_config_is_refused(ferry):
    """ferryctl reload and SIGHUP refuse the file; ferryd goes on with its running config."""
    good = ferry.config.read_text()
    try:
        ferry.config.write_text(good + DEEP)
        r = ferry.ferryctl("reload", timeout=20)
        assert r.returncode != 0, r.stdout
        assert "nested more than 32 levels deep" in r.stderr, r.stderr[-2000:]
        assert ferry.alive(), ferry.log()
        before = ferry.log_path.read_text(errors="replace").count("nested more than 32")
        os.kill(ferry.proc.pid, signal.SIGHUP)  # `ip netns exec` has exec'd ferryd
        deadline = time.time() + 10
        while ferry.log_path.read_text(errors="replace").count("nested more than 32") == before:
            assert ferry.alive(), ferry.log()
            assert time.time() < deadline, ferry.log()
            time.sleep(0.1)
        assert ferry.alive(), ferry.log()
        assert ferry.ferryctl("get", "svc", timeout=5).returncode == 0, ferry.log()
    finally:
        ferry.config.write_text(good)
    r = ferry.ferryctl("reload", timeout=20)
    assert r.returncode == 0, r.stderr


# Issue 16 item 19: fragments.max_datagrams at its documented maximum passed --check, then its
# reassembly table could not be allocated and ferryd ran with reassembly silently off.
def test_check_refuses_reassembly_tables_larger_than_the_dpdk_memory(tmpdir_path):
    path = write_config(tmpdir_path, extra="[fragments]\nmax_datagrams = 1048576\n")
    r, _ = run_ferryd("--config", str(path), "--check")
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "fragments.max_datagrams: 1048576 needs a reassembly table of 512 MiB" in out, out


def test_start_stops_when_a_reassembly_table_cannot_be_allocated(tmpdir_path):
    """Passes --check (256 MiB of table and 18 MiB of pool fit in -m 290 on paper), and the
    rest of ferryd's DPDK memory leaves no room: the start stops, naming the key. net_null
    devices: no kernel interface, so it runs here as it is (metrics off: 9100 may be taken)."""
    path = write_config(tmpdir_path, extra='[fragments]\nmax_datagrams = 524288\n'
                        '[metrics]\naddress = ""\n',
                        replace={'"-m", "512"': '"-m", "290"',
                                 '"net_af_packet0,iface=fe0"': '"net_null0"',
                                 '"net_af_packet1,iface=fe1"': '"net_null1"'})
    r, _ = run_ferryd("--config", str(path), "--check")
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        r, elapsed = run_ferryd("--config", str(path), timeout=30)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"ferryd kept running without its reassembly table: {e.stdout}{e.stderr}")
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "fragments.max_datagrams: no memory for worker 0's reassembly table" in out, out
    assert not (tmpdir_path / "ferry.sock").exists(), os.listdir(tmpdir_path)
