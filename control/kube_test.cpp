// kube: kubeconfig and in-cluster credentials, and the resources followed. (The watch
// protocol itself is tested end to end against tests/e2e/kubeapi.py.)
#include "kube.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

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

}  // namespace
}  // namespace ferry::control::kube
