// kube: kubeconfig and in-cluster credentials, the resources followed, and the watcher
// against a hostile server (a scripted plain-HTTP one below: deep, wrong-typed, endless and
// oversized answers, and failures on every call for the back-off). The watch protocol
// itself is tested end to end against tests/e2e/kubeapi.py.
#include "kube.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

namespace ferry::control::kube {
namespace {

namespace fs = std::filesystem;

struct temp_dir {
  fs::path path;
  temp_dir() {
    std::string tmpl = (fs::temp_directory_path() / "ferry-kube-XXXXXX").string();
    path = mkdtemp(tmpl.data());
  }
  ~temp_dir() { fs::remove_all(path); }
  std::string write(const std::string& name, const std::string& text) const {
    std::ofstream(path / name) << text;
    return (path / name).string();
  }
};

constexpr const char* kConfig = R"(apiVersion: v1
kind: Config
current-context: prod
clusters:
- name: lab
  cluster:
    server: https://lab.example:6443/
    certificate-authority: certs/ca.crt
- name: prod
  cluster:
    server: https://10.0.0.1:6443
    certificate-authority-data: LS0tLS1CRUdJTg==
users:
- name: admin
  user:
    client-certificate: /etc/k/admin.crt
    client-key: admin.key
- name: robot
  user:
    token: abc.def
    client-certificate-data: Y2VydA==
    client-key-data: a2V5
contexts:
- name: lab
  context: {cluster: lab, user: admin}
- name: prod
  context: {cluster: prod, user: robot}
- name: broken
  context: {cluster: nowhere, user: robot}
)";

TEST(kubeconfig, current_context_with_inline_data) {
  temp_dir d;
  auto c = from_kubeconfig(d.write("config", kConfig), "");
  ASSERT_TRUE(c) << c.message();
  EXPECT_EQ(c->server, "https://10.0.0.1:6443");
  EXPECT_EQ(c->ca_pem, "-----BEGIN");
  EXPECT_EQ(c->token, "abc.def");
  EXPECT_EQ(c->cert_pem, "cert");
  EXPECT_EQ(c->key_pem, "key");
  EXPECT_FALSE(c->insecure);
}

TEST(kubeconfig, named_context_with_files_relative_to_the_kubeconfig) {
  temp_dir d;
  auto c = from_kubeconfig(d.write("config", kConfig), "lab");
  ASSERT_TRUE(c) << c.message();
  EXPECT_EQ(c->server, "https://lab.example:6443");  // trailing slash dropped
  EXPECT_EQ(c->ca_file, (d.path / "certs/ca.crt").string());
  EXPECT_EQ(c->cert_file, "/etc/k/admin.crt");
  EXPECT_EQ(c->key_file, (d.path / "admin.key").string());
  EXPECT_TRUE(c->token.empty());
}

TEST(kubeconfig, errors_name_the_file_and_what_is_missing) {
  temp_dir d;
  auto path = d.write("config", kConfig);
  auto missing = from_kubeconfig(path, "staging");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.message(), "kubeconfig " + path + ": no context named \"staging\"");
  auto broken = from_kubeconfig(path, "broken");
  ASSERT_FALSE(broken);
  EXPECT_NE(broken.message().find("names cluster \"nowhere\", which is not in clusters"),
            std::string::npos)
      << broken.message();
  auto nofile = from_kubeconfig((d.path / "absent").string(), "");
  ASSERT_FALSE(nofile);
  EXPECT_NE(nofile.message().find("cannot read"), std::string::npos);
  auto exec = from_kubeconfig(
      d.write("exec",
              "current-context: c\nclusters: [{name: k, cluster: {server: https://k}}]\n"
              "users: [{name: u, user: {exec: {command: aws}}}]\n"
              "contexts: [{name: c, context: {cluster: k, user: u}}]\n"),
      "");
  ASSERT_FALSE(exec);
  EXPECT_NE(exec.message().find("exec credentials are not supported"), std::string::npos);
  auto bad64 = from_kubeconfig(
      d.write("b64",
              "current-context: c\nclusters: [{name: k, cluster: {server: https://k, "
              "certificate-authority-data: \"not base64!\"}}]\n"
              "contexts: [{name: c, context: {cluster: k}}]\n"),
      "");
  ASSERT_FALSE(bad64);
  EXPECT_NE(bad64.message().find("certificate-authority-data is not base64"), std::string::npos);
}

TEST(in_cluster, reads_the_environment_and_the_service_account_files) {
  temp_dir d;
  d.write("token", "t0k3n\n");
  d.write("ca.crt", "PEM");
  setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
  setenv("KUBERNETES_SERVICE_PORT", "443", 1);
  auto c = in_cluster(d.path.string());
  ASSERT_TRUE(c) << c.message();
  EXPECT_EQ(c->server, "https://10.96.0.1:443");
  EXPECT_EQ(c->token_file, (d.path / "token").string());
  EXPECT_EQ(c->ca_file, (d.path / "ca.crt").string());
  setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
  EXPECT_EQ(in_cluster(d.path.string())->server, "https://[fd00::1]:443");

  fs::remove(d.path / "token");
  auto no_token = in_cluster(d.path.string());
  ASSERT_FALSE(no_token);
  EXPECT_NE(no_token.message().find("token"), std::string::npos);
  unsetenv("KUBERNETES_SERVICE_HOST");
  auto outside = in_cluster(d.path.string());
  ASSERT_FALSE(outside);
  EXPECT_NE(outside.message().find("KUBERNETES_SERVICE_HOST"), std::string::npos);
  unsetenv("KUBERNETES_SERVICE_PORT");
}

TEST(watched_resources, filter_as_kube_proxy_does) {
  auto r = watched_resources("edge-1");
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].path, "/api/v1/services");
  EXPECT_EQ(r[0].label_selector, "!service.kubernetes.io/service-proxy-name");
  EXPECT_EQ(r[1].path, "/apis/discovery.k8s.io/v1/endpointslices");
  EXPECT_EQ(r[1].label_selector, "!service.kubernetes.io/service-proxy-name");
  EXPECT_EQ(r[2].path, "/api/v1/nodes");
  EXPECT_EQ(r[2].field_selector, "metadata.name=edge-1");
}

TEST(parse_object, decodes_an_api_object_as_its_manifest_would_be) {
  auto json = nlohmann::json::parse(R"({"kind": "Service", "apiVersion": "v1",
    "metadata": {"name": "web", "namespace": "prod", "resourceVersion": "123"},
    "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80,
             "targetPort": "http-alt", "protocol": "TCP"}]}})");
  auto from_json = model::parse_object(json, "api");
  ASSERT_TRUE(from_json) << from_json.message();
  auto from_text = model::parse_manifests(json.dump(), "text");
  ASSERT_TRUE(from_text) << from_text.message();
  EXPECT_TRUE(*from_json == (*from_text)[0]);
  const auto& svc = std::get<model::service>(*from_json);
  EXPECT_EQ(std::get<std::string>(svc.ports[0].target_port), "http-alt");

  // A string where a number belongs stays a string, and is refused as the API would.
  json["spec"]["ports"][0]["port"] = "80";
  auto bad = model::parse_object(json, "api");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.message().find("Service prod/web: spec.ports[0].port"), std::string::npos)
      << bad.message();
}

// An SCTP Service from the API is kept whole (it used to be skipped, variables, DNS and all).
TEST(parse_object, keeps_an_sctp_service) {
  auto json = nlohmann::json::parse(R"({"kind": "Service", "apiVersion": "v1",
    "metadata": {"name": "diameter", "namespace": "prod", "resourceVersion": "7"},
    "spec": {"clusterIP": "10.96.0.30", "ports": [{"name": "diameter", "port": 3868,
             "protocol": "SCTP"}, {"name": "m", "port": 9090, "protocol": "TCP"}]}})");
  auto o = model::parse_object(json, "api");
  ASSERT_TRUE(o) << o.message();
  const auto& svc = std::get<model::service>(*o);
  ASSERT_EQ(svc.ports.size(), 2u);
  EXPECT_EQ(svc.ports[0].protocol, kProtoSctp);
  EXPECT_EQ(svc.ports[1].protocol, kProtoTcp);
}

// The API path reads JSON values directly; it must accept and refuse exactly what the text
// path does, with the same messages.
TEST(parse_object, agrees_with_the_text_decoder) {
  const std::string svc = R"({"kind": "Service", "apiVersion": "v1", "metadata": {"name": "w",
    "labels": {"version": 2, "canary": true}}, "spec": {"clusterIP": "10.96.0.10",
    "sessionAffinity": "ClientIP", "publishNotReadyAddresses": PUBLISH,
    "ports": [{"name": "http", "port": PORT, "targetPort": TARGET, "protocol": "TCP"}]}})";
  auto with = [&](std::string port, std::string target, std::string publish) {
    std::string out = svc;
    out.replace(out.find("PORT"), 4, port);
    out.replace(out.find("TARGET"), 6, target);
    out.replace(out.find("PUBLISH"), 7, publish);
    return out;
  };
  const std::vector<std::string> cases = {
      with("80", "8080", "true"),
      with("80", "\"http-alt\"", "false"),
      with("\"80\"", "8080", "true"),
      with("80.5", "8080", "true"),
      with("-1", "8080", "true"),
      with("70000", "8080", "true"),
      with("80", "0", "true"),
      with("80", "\"\"", "true"),
      with("80", "8080", "\"true\""),
      with("80", "8080", "1"),
      with("80", "[1]", "true"),
      with("null", "8080", "null"),
      with("80", "{\"a\": 1}", "true"),
      R"({"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1", "metadata": {"name":
        "s", "labels": {"kubernetes.io/service-name": "w"}}, "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": false},
        "hints": {"forZones": [{"name": "z"}]}, "zone": "z"}], "ports": [{"port": 80}]})",
      R"({"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1", "metadata": {"name":
        "s", "labels": {"kubernetes.io/service-name": "w"}}, "addressType": "IPv4",
        "endpoints": [{"addresses": ["fd00::1"]}]})",
      R"({"kind": "Node", "apiVersion": "v1", "metadata": {"name": "n", "labels":
        {"topology.kubernetes.io/zone": "z"}}, "status": {"addresses": [{"type":
        "InternalIP", "address": "10.0.0.9"}, {"type": "Hostname", "address": "n"}]}})",
      R"({"kind": "Service", "apiVersion": "v1", "metadata": {"name": "Bad_Name"}})",
      R"({"kind": "Service", "apiVersion": "v1", "metadata": {"name": "w", "labels": [1]}})",
      R"({"kind": "Pod", "apiVersion": "v2", "metadata": {"name": "p"}})",
  };
  for (const auto& text : cases) {
    SCOPED_TRACE(text);
    auto from_text = model::parse_manifests(text, "X");
    auto from_json = model::parse_object(nlohmann::json::parse(text), "X");
    ASSERT_EQ(from_text.ok(), from_json.ok())
        << (from_text ? from_json.message() : from_text.message());
    if (from_text) {
      ASSERT_EQ(from_text->size(), 1u);
      EXPECT_TRUE((*from_text)[0] == *from_json);
    } else {
      // The text path names the document ("X: document 1: ..." until the object is known).
      std::string text_msg = from_text.message(), json_msg = from_json.message();
      auto strip = [](std::string m) {
        if (auto p = m.find("document 1"); p != std::string::npos) m.erase(p, 12);
        return m;
      };
      EXPECT_EQ(strip(text_msg), strip(json_msg));
    }
  }
}

// ---- The watcher against a hostile server ----------------------------------------------

// A plain-HTTP server on 127.0.0.1 answering one connection at a time with what a handler
// says for the request target: the whole answer, then the connection is closed, or held
// open (a watch that stays quiet) until the server stops.
class script_server {
 public:
  struct answer {
    std::string bytes;
    bool hold = false;
  };
  using handler = std::function<answer(const std::string& target)>;

  explicit script_server(handler h) : handler_(std::move(h)) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    socklen_t len = sizeof a;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    listen(fd_, 16);
    thread_ = std::thread([this] { serve(); });
  }
  ~script_server() {
    stop_ = true;
    thread_.join();
    close(fd_);
  }
  std::string url(const char* scheme = "http") const {
    return std::string(scheme) + "://127.0.0.1:" + std::to_string(port_);
  }
  // Requests whose target contains `what` ("watch=1", "limit=").
  int count(const std::string& what) const {
    std::lock_guard lock(mu_);
    int n = 0;
    for (const auto& t : targets_) n += t.find(what) != std::string::npos;
    return n;
  }

 private:
  void serve() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 50) <= 0) continue;
      int c = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      std::string req;
      char buf[4096];
      while (req.find("\r\n\r\n") == std::string::npos) {
        pollfd q{c, POLLIN, 0};
        if (poll(&q, 1, 2000) <= 0) break;
        ssize_t n = read(c, buf, sizeof buf);
        if (n <= 0) break;
        req.append(buf, static_cast<size_t>(n));
      }
      auto sp1 = req.find(' '), sp2 = req.find(' ', sp1 + 1);
      std::string target = sp1 == std::string::npos || sp2 == std::string::npos
                               ? ""
                               : req.substr(sp1 + 1, sp2 - sp1 - 1);
      {
        std::lock_guard lock(mu_);
        targets_.push_back(target);
      }
      answer a = handler_(target);
      size_t off = 0;
      while (off < a.bytes.size() && !stop_) {
        ssize_t n = send(c, a.bytes.data() + off, a.bytes.size() - off, MSG_NOSIGNAL);
        if (n <= 0) break;
        off += static_cast<size_t>(n);
      }
      while (a.hold && !stop_) {
        pollfd q{c, POLLIN, 0};
        if (poll(&q, 1, 50) > 0 && read(c, buf, sizeof buf) <= 0) break;  // the client left
      }
      close(c);
    }
  }

  handler handler_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  mutable std::mutex mu_;
  std::vector<std::string> targets_;
};

std::string http_answer(int code, const std::string& body) {
  return "HTTP/1.1 " + std::to_string(code) +
         " X\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n" + body;
}

// A watch stream that closes after these lines.
std::string watch_answer(const std::string& lines) { return http_answer(200, lines); }

const std::string kEmptyList =
    R"({"kind": "ServiceList", "apiVersion": "v1", "metadata": {"resourceVersion": "7"},
        "items": []})";

std::string service_event(const std::string& type, const std::string& name,
                          const std::string& rv_json) {
  return R"({"type": ")" + type + R"(", "object": {"kind": "Service", "apiVersion": "v1", )" +
         R"("metadata": {"name": ")" + name + R"(", "namespace": "default", "resourceVersion": )" +
         rv_json + R"(}, "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}}})" + "\n";
}

std::string nested(size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

// One Service watcher on a server; status of its one resource.
struct client {
  watcher w;
  client(const std::string& url, kubernetes_config cfg = {})
      : w(credentials{.server = url}, with_defaults(cfg),
          {resource{"Service", "v1", "/api/v1/services", "", ""}}) {
    w.start();
  }
  static kubernetes_config with_defaults(kubernetes_config cfg) {
    cfg.enabled = true;
    cfg.watch_timeout = 30;
    return cfg;
  }
  resource_status status() const { return w.status()[0]; }
  // Waits (up to 10 s) until check holds.
  bool wait(const std::function<bool(const resource_status&)>& check) const {
    for (int i = 0; i < 200; ++i) {
      if (check(status())) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }
};

bool has(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

TEST(nested_deeper_than, counts_arrays_and_objects_outside_strings) {
  EXPECT_FALSE(nested_deeper_than(R"({"a": [1, {"b": 2}]})", 3));
  EXPECT_TRUE(nested_deeper_than(R"({"a": [1, {"b": 2}]})", 2));
  EXPECT_FALSE(nested_deeper_than(R"({"a": "[[[[[[\"[[[["})", 1));
  EXPECT_TRUE(nested_deeper_than(nested(101), kMaxJsonDepth));
  EXPECT_FALSE(nested_deeper_than(nested(100), kMaxJsonDepth));
}

TEST(backoff, doubles_from_800ms_to_30s_with_jitter_and_resets_after_a_healthy_period) {
  backoff b(42);
  int64_t now = 1000000;
  uint64_t step = 800;
  for (int i = 0; i < 8; ++i) {
    uint64_t w = b.next(now);
    EXPECT_GE(w, step);
    EXPECT_LT(w, 2 * step);
    step = std::min<uint64_t>(step * 2, 30000);
    now += 60000;  // failures a minute apart: still unhealthy
  }
  EXPECT_GE(b.next(now), 30000u);
  uint64_t after_rest = b.next(now + 120001);
  EXPECT_GE(after_rest, 800u);
  EXPECT_LT(after_rest, 1600u);

  backoff lab(7, 100, 250);  // [kubernetes] backoff_initial_ms, backoff_max_ms
  EXPECT_LT(lab.next(0), 200u);
  EXPECT_GE(lab.next(1), 200u);
  uint64_t capped = lab.next(2);
  EXPECT_GE(capped, 250u);
  EXPECT_LT(capped, 500u);
}

// Item 2: a watch ERROR event whose object nests 100,000 deep killed ferryd (dump()).
TEST(watcher, a_deep_error_event_is_an_error_not_a_crash) {
  std::atomic<int> watches{0};
  script_server api([&](const std::string& t) -> script_server::answer {
    if (!has(t, "watch=1")) return {http_answer(200, kEmptyList)};
    if (watches++ == 0) {
      return {watch_answer(R"({"type": "ERROR", "object": {"kind": "Status", "code": 500, "x": )" +
                           nested(100000) + "}}\n")};
    }
    // Shallow, but with a nested detail: only reason and message are shown.
    return {watch_answer(R"({"type": "ERROR", "object": {"kind": "Status", "code": 500, )"
                         R"("reason": "InternalError", "message": "etcd is sad", )"
                         R"("details": {"causes": [[["x"]]]}}})"
                         "\n"),
            true};
  });
  client c(api.url());
  ASSERT_TRUE(c.wait([](const auto& s) { return s.errors >= 2; })) << c.status().last_error;
  EXPECT_EQ(
      c.status().last_error,
      "watch " + api.url() + "/api/v1/services: ERROR event, code 500: InternalError: etcd is sad");
  EXPECT_GE(c.status().too_large, 1u);  // the deep one
}

// Item 14: wrong-typed fields threw through libcurl's callback; now the event is left out,
// naming the field, and the stream goes on.
TEST(watcher, wrong_typed_fields_skip_the_event_and_name_the_field) {
  script_server api([&](const std::string& t) -> script_server::answer {
    if (!has(t, "watch=1")) {
      return {http_answer(200, R"({"metadata": {"resourceVersion": "7"}, "items": [1]})")};
    }
    if (has(t, "resourceVersion=9")) return {watch_answer(""), true};
    return {
        watch_answer(service_event("ADDED", "a", "\"8\"") + service_event("MODIFIED", "a", "[1]") +
                     service_event("ADDED", "b", "\"9\"")),
        true};
  });
  client c(api.url());
  ASSERT_TRUE(c.wait([](const auto& s) { return s.resource_version == "9"; }))
      << c.status().last_error;
  auto s = c.status();
  EXPECT_EQ(s.events, 2u);
  EXPECT_EQ(s.skipped, 2u);  // the list's item 1 and the MODIFIED event
  EXPECT_TRUE(s.synced);
  EXPECT_EQ(s.errors, 0u);
  // An ERROR event whose code is a string is an error that says so.
  script_server api2([&](const std::string& t) -> script_server::answer {
    if (!has(t, "watch=1")) return {http_answer(200, kEmptyList)};
    return {watch_answer(R"({"type": "ERROR", "object": {"code": "410", "message": "m"}})"
                         "\n"),
            true};
  });
  client c2(api2.url());
  ASSERT_TRUE(c2.wait([](const auto& s) { return s.errors >= 1; }));
  EXPECT_TRUE(has(c2.status().last_error, "ERROR event, no numeric code: m"))
      << c2.status().last_error;
}

// 200,000 undecodable events gave 200,000 warnings: repeated lines are rate-limited.
TEST(watcher, repeated_warnings_are_rate_limited) {
  std::string events;
  for (int i = 0; i < 1000; ++i) {
    const std::string n = std::to_string(i);
    events += service_event("ADDED", n, n);  // resourceVersion a number
  }
  script_server api([&](const std::string& t) -> script_server::answer {
    if (!has(t, "watch=1")) return {http_answer(200, kEmptyList)};
    return {watch_answer(events), true};
  });
  std::ostringstream log;
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>(
      "capture", std::make_shared<spdlog::sinks::ostream_sink_mt>(log)));
  {
    client c(api.url());
    EXPECT_TRUE(c.wait([](const auto& s) { return s.skipped == 1000; })) << c.status().skipped;
  }
  spdlog::set_default_logger(previous);
  const std::string text = log.str();
  size_t lines = 0;
  for (size_t p = 0; (p = text.find("skipped", p)) != std::string::npos; ++p) ++lines;
  EXPECT_LE(lines, 10u) << text.substr(0, 2000);
  EXPECT_GE(lines, 1u);
}

// Item 13: failures of every kind back off exponentially (0.8-1.6 s, then 1.6-3.2 s, ...):
// over 3.5 s at most 3 tries, where there were hundreds.
TEST(watcher, every_failure_kind_backs_off) {
  auto list_ok = [](const std::string& t, auto watch) -> script_server::answer {
    if (!has(t, "watch=1")) return {http_answer(200, kEmptyList)};
    return watch();
  };
  script_server gone([&](const std::string& t) {
    return list_ok(t, [] { return script_server::answer{http_answer(410, "")}; });
  });
  script_server closed_at_once([&](const std::string& t) {
    return list_ok(t, [] { return script_server::answer{watch_answer("")}; });
  });
  script_server bad_line([&](const std::string& t) {
    return list_ok(t, [] { return script_server::answer{watch_answer("{not json\n")}; });
  });
  script_server failing([&](const std::string&) {
    return script_server::answer{http_answer(500, R"({"kind": "Status", "reason": "X"})")};
  });
  {
    client a(gone.url()), b(closed_at_once.url()), c(bad_line.url()), d(failing.url());
    std::this_thread::sleep_for(std::chrono::milliseconds(3500));
    EXPECT_LE(gone.count("limit="), 3);
    EXPECT_LE(closed_at_once.count("watch=1"), 3);
    EXPECT_LE(bad_line.count("watch=1"), 3);
    EXPECT_LE(failing.count("limit="), 3);
    EXPECT_TRUE(has(b.status().last_error, "very short watch")) << b.status().last_error;
    EXPECT_GE(b.status().errors, 1u);
    EXPECT_GE(c.status().backoff_ms, 1600u);  // grew: not reset by the line that came
  }
}

// Item 7: a server answering `continue` forever: the list fails at max_list_objects.
TEST(watcher, a_list_that_never_ends_fails_at_its_object_cap) {
  std::atomic<int> page{0};
  script_server api([&](const std::string& t) -> script_server::answer {
    if (has(t, "watch=1")) return {watch_answer(""), true};
    int n = page++;
    return {http_answer(200, R"({"metadata": {"resourceVersion": "7", "continue": "c)" +
                                 std::to_string(n) + R"("}, "items": [{"metadata": {"name": "s)" +
                                 std::to_string(n) + R"("}, "spec": {"clusterIP": "None"}}]})")};
  });
  kubernetes_config cfg;
  cfg.max_list_objects = 50;
  client c(api.url(), cfg);
  ASSERT_TRUE(c.wait([](const auto& s) { return s.errors >= 1; }));
  EXPECT_TRUE(has(c.status().last_error, "over kubernetes.max_list_objects (50)"))
      << c.status().last_error;
  EXPECT_EQ(c.status().too_large, 1u);
  EXPECT_FALSE(c.status().synced);
  EXPECT_LE(page.load(), 51);
}

// Item 8: a list body over max_list_bytes, and a watch line that never ends.
TEST(watcher, bodies_and_lines_over_their_caps_fail) {
  std::string big(1 << 20, ' ');
  script_server api([&](const std::string& t) -> script_server::answer {
    if (!has(t, "watch=1")) return {http_answer(200, R"({"items": [], "x": ")" + big + "\"}")};
    return {watch_answer("")};
  });
  kubernetes_config cfg;
  cfg.max_list_bytes = 1 << 16;
  client c(api.url(), cfg);
  ASSERT_TRUE(c.wait([](const auto& s) { return s.errors >= 1; }));
  EXPECT_TRUE(has(c.status().last_error, "over kubernetes.max_list_bytes (65536 bytes)"))
      << c.status().last_error;
  EXPECT_EQ(c.status().too_large, 1u);

  script_server endless([&](const std::string& t) -> script_server::answer {
    if (!has(t, "watch=1")) return {http_answer(200, kEmptyList)};
    return {watch_answer(R"({"type": "ADDED", "object": {"x": ")" + big), true};
  });
  kubernetes_config small;
  small.max_event_bytes = 1 << 16;
  client e(endless.url(), small);
  ASSERT_TRUE(e.wait([](const auto& s) { return s.errors >= 1; }));
  EXPECT_TRUE(has(e.status().last_error, "a watch event is over 65536 bytes"))
      << e.status().last_error;
  EXPECT_EQ(e.status().too_large, 1u);
}

// Item 15: a TLS failure says what failed, not only curl's generic text.
TEST(watcher, tls_failures_say_which_check_failed) {
  script_server plain([&](const std::string&) { return script_server::answer{"garbage\r\n"}; });
  client c(plain.url("https"));
  ASSERT_TRUE(c.wait([](const auto& s) { return s.errors >= 1; }));
  EXPECT_TRUE(has(c.status().last_error, "SSL connect error: ")) << c.status().last_error;
}

}  // namespace
}  // namespace ferry::control::kube
