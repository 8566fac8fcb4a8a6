#include "kube.hpp"

#include <curl/curl.h>
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

namespace ferry::control::kube {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

result<std::string> read_file(const std::string& path, const std::string& what) {
  std::ifstream in(path);
  if (!in) return make_error(what + ": cannot read " + path + ": " + std::strerror(errno));
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

std::string trim(std::string s) {
  auto ws = [](unsigned char c) { return std::isspace(c); };
  s.erase(s.begin(), std::find_if_not(s.begin(), s.end(), ws));
  s.erase(std::find_if_not(s.rbegin(), s.rend(), ws).base(), s.end());
  return s;
}

std::optional<std::string> base64_decode(std::string_view in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=' || std::isspace(static_cast<unsigned char>(c))) continue;
    int v = value(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  return out;
}

// The entry of a kubeconfig list (clusters, users, contexts) with this name.
YAML::Node named(const YAML::Node& root, const char* list, const std::string& name) {
  for (const auto& item : root[list]) {
    if (item["name"] && item["name"].as<std::string>() == name) return item;
  }
  return YAML::Node();
}

}  // namespace

result<credentials> from_kubeconfig(const std::string& path, const std::string& context) {
  auto text = read_file(path, "kubernetes.kubeconfig");
  if (!text) return text.err();
  const std::string where = "kubeconfig " + path;
  credentials c;
  try {
    YAML::Node root = YAML::Load(*text);
    std::string ctx_name = context;
    if (ctx_name.empty() && root["current-context"]) {
      ctx_name = root["current-context"].as<std::string>();
    }
    if (ctx_name.empty()) return make_error(where + ": no current-context, and no context given");
    c.origin = where + ", context " + ctx_name;
    auto ctx = named(root, "contexts", ctx_name)["context"];
    if (!ctx) return make_error(where + ": no context named \"" + ctx_name + "\"");
    std::string cluster_name = ctx["cluster"] ? ctx["cluster"].as<std::string>() : "";
    std::string user_name = ctx["user"] ? ctx["user"].as<std::string>() : "";
    auto cluster = named(root, "clusters", cluster_name)["cluster"];
    if (!cluster) {
      return make_error(where + ": context \"" + ctx_name + "\" names cluster \"" + cluster_name +
                        "\", which is not in clusters");
    }
    auto user = named(root, "users", user_name)["user"];
    const fs::path dir = fs::path(path).parent_path();
    auto file_of = [&](const YAML::Node& n) {
      fs::path p(n.as<std::string>());
      return (p.is_relative() ? dir / p : p).string();
    };
    auto data_of = [&](const YAML::Node& n, const char* field) -> std::string {
      auto d = base64_decode(n.as<std::string>());
      if (!d) throw std::runtime_error(std::string(field) + " is not base64");
      return *d;
    };
    c.server = cluster["server"] ? cluster["server"].as<std::string>() : "";
    if (c.server.empty())
      return make_error(where + ": cluster \"" + cluster_name + "\" has no server");
    while (!c.server.empty() && c.server.back() == '/') c.server.pop_back();
    if (cluster["certificate-authority"]) c.ca_file = file_of(cluster["certificate-authority"]);
    if (cluster["certificate-authority-data"]) {
      c.ca_pem = data_of(cluster["certificate-authority-data"], "certificate-authority-data");
    }
    c.insecure =
        cluster["insecure-skip-tls-verify"] && cluster["insecure-skip-tls-verify"].as<bool>();
    if (user) {
      if (user["token"]) c.token = user["token"].as<std::string>();
      if (user["tokenFile"]) c.token_file = file_of(user["tokenFile"]);
      if (user["client-certificate"]) c.cert_file = file_of(user["client-certificate"]);
      if (user["client-key"]) c.key_file = file_of(user["client-key"]);
      if (user["client-certificate-data"]) {
        c.cert_pem = data_of(user["client-certificate-data"], "client-certificate-data");
      }
      if (user["client-key-data"]) c.key_pem = data_of(user["client-key-data"], "client-key-data");
      for (const char* unsupported : {"exec", "auth-provider", "username"}) {
        if (user[unsupported]) {
          return make_error(where + ": user \"" + user_name + "\": " + unsupported +
                            " credentials are not supported (use a token, a token file or a "
                            "client certificate)");
        }
      }
    }
  } catch (const std::exception& e) {
    return make_error(where + ": " + e.what());
  }
  return c;
}

result<credentials> in_cluster(const std::string& sa_dir) {
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
  if (!host || !*host || !port || !*port) {
    return make_error(
        "kubernetes.in_cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set "
        "(not running in a pod?)");
  }
  credentials c;
  std::string h = host;
  if (h.find(':') != std::string::npos) h = "[" + h + "]";  // an IPv6 address
  c.server = "https://" + h + ":" + port;
  c.token_file = sa_dir + "/token";
  c.ca_file = sa_dir + "/ca.crt";
  for (const auto& f : {c.token_file, c.ca_file}) {
    if (auto r = read_file(f, "kubernetes.in_cluster"); !r) return r.err();
  }
  c.origin = "in-cluster (" + c.server + ")";
  return c;
}

result<credentials> credentials_for(const kubernetes_config& cfg) {
  return cfg.in_cluster ? in_cluster(cfg.service_account_dir)
                        : from_kubeconfig(cfg.kubeconfig, cfg.context);
}

std::vector<resource> watched_resources(const std::string& node_name) {
  const std::string other_proxy = "!service.kubernetes.io/service-proxy-name";
  return {
      {"Service", "v1", "/api/v1/services", other_proxy, ""},
      {"EndpointSlice", "discovery.k8s.io/v1", "/apis/discovery.k8s.io/v1/endpointslices",
       other_proxy, ""},
      {"Node", "v1", "/api/v1/nodes", "", "metadata.name=" + node_name, false},
  };
}

uint64_t backoff::next(int64_t now_ms) {
  if (!started_ || now_ms - last_start_ms_ > static_cast<int64_t>(kResetMs)) {
    step_ms_ = initial_ms_;  // healthy since the last wait began: start again
  }
  started_ = true;
  last_start_ms_ = now_ms;
  const uint64_t step = step_ms_;
  step_ms_ = std::min(step_ms_ * 2, max_ms_);
  rng_ ^= rng_ >> 12;
  rng_ ^= rng_ << 25;
  rng_ ^= rng_ >> 27;
  const uint64_t r = rng_ * 0x2545F4914F6CDD1DULL;
  return step + r % step;  // jitter 1.0: [step, 2 step)
}

namespace {

// A status field never includes a value that came from the API server as JSON text: only
// strings are read, and at most this much of each.
constexpr size_t kMaxShown = 200;
// Bodies of failed requests (a Status object) are read up to this size; bigger ones fail.
constexpr size_t kMaxErrorBody = 64 << 10;
// A watch shorter than this with no event is a failure, as client-go's reflector says
// "very short watch": a server that answers 200 and closes at once must not be hammered.
constexpr int64_t kShortWatchMs = 1000;

std::string shown(std::string_view s) {
  std::string out(s.substr(0, kMaxShown));
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20) c = '?';
  }
  if (s.size() > kMaxShown) out += "...";
  return out;
}

// A member of a JSON object: absent (nullptr), or there. Never inserts, never throws.
const json* member(const json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

// A string member: nullopt when absent; an error naming the field when it is not a string.
struct field_error {
  std::string message;
};
std::optional<std::string> string_member(const json& obj, const char* key, const char* path) {
  const json* v = member(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_string()) {
    throw field_error{std::string(path) + " must be a string, got " + v->type_name()};
  }
  return v->get<std::string>();
}

// One libcurl handle, reused for every request of one resource (keep-alive). Lines of a
// streamed body go to a callback as they arrive. Nothing thrown crosses libcurl (a C
// library): the callbacks catch everything and end the transfer with an error.
class http {
 public:
  http(const credentials& c, const std::atomic<bool>& stop) : creds_(c), stop_(stop) {
    curl_ = curl_easy_init();
  }
  ~http() {
    if (curl_) curl_easy_cleanup(curl_);
  }

  struct response {
    long status = 0;         // 0: no HTTP answer (see error)
    std::string body;        // whole body for non-streamed or non-200 answers
    std::string error;       // transport error, or a bound that was exceeded
    bool too_large = false;  // a body or line over its bound ended it
    bool stopped = false;    // the line callback or a stop ended it
  };

  // Returns false to end the stream; throws nothing (what it throws becomes an error).
  using line_fn = std::function<bool(std::string_view line)>;

  // max_body bounds a 200 answer's body (not streamed) and max_line a streamed line.
  // on_open: called once when a 200 answer's headers are in (a watch stream is open).
  response get(const std::string& path_query, long timeout_s, size_t max_body, size_t max_line,
               const line_fn& on_line = {}, const std::function<void()>& on_open = {}) {
    response r;
    if (!curl_) {
      r.error = "cannot create a libcurl handle";
      return r;
    }
    std::string auth;
    std::string token = creds_.token;
    if (!creds_.token_file.empty()) {
      // Re-read every time: projected service account tokens rotate (about hourly). An
      // unreadable file sends no token; the server's 401 then shows in the status.
      if (auto t = read_file(creds_.token_file, "token")) token = trim(*t);
    }
    curl_slist* headers = curl_slist_append(nullptr, "Accept: application/json");
    if (!token.empty()) {
      auth = "Authorization: Bearer " + token;
      headers = curl_slist_append(headers, auth.c_str());
    }
    std::string url = creds_.server + path_query;
    curl_easy_setopt(curl_, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl_, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl_, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl_, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(curl_, CURLOPT_TIMEOUT, timeout_s);
    curl_easy_setopt(curl_, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(curl_, CURLOPT_TCP_KEEPIDLE, 30L);
    curl_easy_setopt(curl_, CURLOPT_TCP_KEEPINTVL, 10L);
    curl_easy_setopt(curl_, CURLOPT_ACCEPT_ENCODING, "");  // gzip if the server offers it
    curl_easy_setopt(curl_, CURLOPT_SSL_VERIFYPEER, creds_.insecure ? 0L : 1L);
    curl_easy_setopt(curl_, CURLOPT_SSL_VERIFYHOST, creds_.insecure ? 0L : 2L);
    if (!creds_.ca_file.empty()) curl_easy_setopt(curl_, CURLOPT_CAINFO, creds_.ca_file.c_str());
    if (!creds_.ca_pem.empty()) set_blob(CURLOPT_CAINFO_BLOB, creds_.ca_pem);
    if (!creds_.cert_file.empty()) {
      curl_easy_setopt(curl_, CURLOPT_SSLCERT, creds_.cert_file.c_str());
    }
    if (!creds_.key_file.empty()) curl_easy_setopt(curl_, CURLOPT_SSLKEY, creds_.key_file.c_str());
    if (!creds_.cert_pem.empty()) set_blob(CURLOPT_SSLCERT_BLOB, creds_.cert_pem);
    if (!creds_.key_pem.empty()) set_blob(CURLOPT_SSLKEY_BLOB, creds_.key_pem);
    // curl's own words for what failed (which TLS check, say): its generic text per code
    // ("SSL connect error") does not tell an operator what to fix.
    errbuf_[0] = '\0';
    curl_easy_setopt(curl_, CURLOPT_ERRORBUFFER, errbuf_);

    sink s{.self = this,
           .r = &r,
           .on_line = on_line ? &on_line : nullptr,
           .on_open = on_open ? &on_open : nullptr,
           .max_body = max_body,
           .max_line = max_line};
    curl_easy_setopt(curl_, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(curl_, CURLOPT_WRITEFUNCTION, &http::on_data);
    curl_easy_setopt(curl_, CURLOPT_XFERINFODATA, &s);
    curl_easy_setopt(curl_, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl_, CURLOPT_XFERINFOFUNCTION, &http::on_progress);
    CURLcode rc = curl_easy_perform(curl_);
    curl_slist_free_all(headers);
    curl_easy_setopt(curl_, CURLOPT_ERRORBUFFER, nullptr);
    if (!r.status) curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &r.status);
    if (!r.error.empty()) {
      r.stopped = false;  // a callback's error (a bound, a bad line) ended it
    } else if (rc == CURLE_ABORTED_BY_CALLBACK || (rc == CURLE_WRITE_ERROR && r.stopped)) {
      r.stopped = true;
    } else if (rc == CURLE_PARTIAL_FILE) {
      r.error = "the connection closed in the middle of the answer";
    } else if (rc != CURLE_OK) {
      r.error = curl_easy_strerror(rc);
      if (errbuf_[0] && r.error != errbuf_) r.error += std::string(": ") + errbuf_;
    }
    return r;
  }

 private:
  struct sink {
    http* self;
    response* r;
    const line_fn* on_line;
    const std::function<void()>* on_open;
    std::string partial;  // an unfinished line
    size_t scanned = 0;   // bytes of partial known to hold no newline
    size_t max_body = 0, max_line = 0;
  };

  // Reads the status once the headers are in, and says so once to on_open.
  static void check_open(sink* s) {
    if (s->r->status) return;
    curl_easy_getinfo(s->self->curl_, CURLINFO_RESPONSE_CODE, &s->r->status);
    if (s->r->status == 200 && s->on_open) (*s->on_open)();
  }

  static size_t fail(sink* s, std::string error, bool too_large) {
    s->r->error = std::move(error);
    s->r->too_large = too_large;
    return 0;  // aborts the transfer
  }

  static size_t on_data(char* data, size_t, size_t n, void* user) {
    auto* s = static_cast<sink*>(user);
    try {
      return take(s, data, n);
    } catch (const std::exception& e) {
      return fail(s, std::string("cannot read the answer: ") + e.what(), false);
    } catch (...) {
      return fail(s, "cannot read the answer", false);
    }
  }

  static size_t take(sink* s, char* data, size_t n) {
    check_open(s);
    if (!s->on_line || s->r->status != 200) {
      const size_t max = s->r->status == 200 ? s->max_body : kMaxErrorBody;
      if (s->r->body.size() + n > max) {
        return fail(s, "the answer is over " + std::to_string(max) + " bytes", true);
      }
      s->r->body.append(data, n);
      return n;
    }
    s->partial.append(data, n);
    // Only the new bytes are searched: a line that never ends costs linear time, not
    // quadratic, until it is over the bound.
    size_t start = 0, eol, from = s->scanned;
    while ((eol = s->partial.find('\n', from)) != std::string::npos) {
      std::string_view line(s->partial.data() + start, eol - start);
      start = from = eol + 1;
      if (line.size() > s->max_line) {
        return fail(s, "a watch event is over " + std::to_string(s->max_line) + " bytes", true);
      }
      if (!line.empty() && !(*s->on_line)(line)) {
        s->r->stopped = true;
        return 0;  // aborts the transfer
      }
    }
    s->partial.erase(0, start);
    s->scanned = s->partial.size();
    if (s->partial.size() > s->max_line) {
      return fail(s, "a watch event is over " + std::to_string(s->max_line) + " bytes", true);
    }
    return n;
  }

  // libcurl calls this about once a second even on an idle stream.
  static int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
    auto* s = static_cast<sink*>(user);
    try {
      check_open(s);
    } catch (...) {
      return 1;
    }
    return s->self->stop_.load() ? 1 : 0;
  }

  void set_blob(CURLoption opt, const std::string& pem) {
    curl_blob b{const_cast<char*>(pem.data()), pem.size(), CURL_BLOB_COPY};
    curl_easy_setopt(curl_, opt, &b);
  }

  const credentials& creds_;
  const std::atomic<bool>& stop_;
  CURL* curl_ = nullptr;
  char errbuf_[CURL_ERROR_SIZE] = {};
};

// Percent-encodes a query parameter value.
std::string escape(const std::string& s) {
  char* e = curl_easy_escape(nullptr, s.data(), static_cast<int>(s.size()));
  std::string out = e ? e : "";
  curl_free(e);
  return out;
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The store key of an API object (namespaced kinds default to "default"; Nodes use "").
// Throws field_error when a name is not a string.
object_key key_of(const json& obj, const std::string& kind) {
  std::string ns = kind == "Node" ? "" : "default", name;
  if (const json* m = member(obj, "metadata"); m && m->is_object()) {
    if (kind != "Node") ns = string_member(*m, "namespace", "metadata.namespace").value_or(ns);
    name = string_member(*m, "name", "metadata.name").value_or("");
  }
  return {kind, ns, name};
}

// A Status object's reason and message (strings only, shortened): never the object itself,
// which may be anything, nested as deep as it likes.
std::string status_text(const json& st) {
  auto text = [&](const char* key) {
    const json* v = member(st, key);
    return v && v->is_string() ? shown(v->get_ref<const std::string&>()) : std::string();
  };
  std::string reason = text("reason"), message = text("message");
  if (reason.empty() && message.empty()) return "";
  return reason + (reason.empty() || message.empty() ? "" : ": ") + message;
}

// An API failure's message: a Status object's reason and message when the body is one.
std::string status_message(long code, const std::string& body) {
  std::string msg = "HTTP " + std::to_string(code);
  json j;
  if (!nested_deeper_than(body, kMaxJsonDepth)) j = json::parse(body, nullptr, false);
  const json* kind = member(j, "kind");
  if (kind && kind->is_string() && *kind == "Status") {
    if (auto t = status_text(j); !t.empty()) msg += " " + t;
  } else if (!body.empty()) {
    msg += ": " + shown(body);
  }
  return msg;
}

// Repeated warnings (an undecodable event after another, an error per retry) are logged at
// most kBurst per kWindowMs per resource; how many were left out is said on the next one.
class log_limiter {
 public:
  static constexpr int kBurst = 10;
  static constexpr int64_t kWindowMs = 10000;
  // Whether to log now; when so, suppressed is what was left out since.
  bool allow(uint64_t& suppressed) {
    const int64_t now = steady_ms();
    if (now - window_start_ >= kWindowMs) {
      window_start_ = now;
      used_ = 0;
    }
    if (used_ >= kBurst) {
      ++suppressed_;
      return false;
    }
    ++used_;
    suppressed = suppressed_;
    suppressed_ = 0;
    return true;
  }

 private:
  int64_t window_start_ = 0;
  int used_ = 0;
  uint64_t suppressed_ = 0;
};

std::string suppressed_note(uint64_t n) {
  return n ? " (" + std::to_string(n) + " similar lines left out)" : "";
}

// Thrown inside list_and_watch for a bound that was exceeded (counted apart).
struct too_large_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace

watcher::watcher(credentials creds, const kubernetes_config& cfg, std::vector<resource> resources)
    : creds_(std::move(creds)), cfg_(cfg), resources_(std::move(resources)) {
  static std::once_flag curl_init;
  std::call_once(curl_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  for (const auto& r : resources_) status_.push_back({.kind = r.kind});
  backoff_at_ms_.assign(resources_.size(), 0);
}

watcher::~watcher() {
  stop_.store(true);
  cv_.notify_all();
  for (auto& t : threads_) t.join();
  if (wake_fd_ >= 0) close(wake_fd_);
}

void watcher::start() {
  for (size_t i = 0; i < resources_.size(); ++i) {
    threads_.emplace_back([this, i] { run(i); });
    std::string name = "kube-" + resources_[i].kind.substr(0, 10);
    pthread_setname_np(threads_.back().native_handle(), name.c_str());
  }
}

update watcher::take() {
  uint64_t n;
  [[maybe_unused]] auto got = read(wake_fd_, &n, sizeof n);
  std::lock_guard lock(mu_);
  update u;
  for (size_t i = 0; i < resources_.size(); ++i) {
    if (resources_[i].gates_first_sync && !status_[i].synced) return u;  // the list wakes us
  }
  for (auto& [key, obj] : waiting_) {
    if (obj) {
      u.upserts.push_back(std::move(*obj));
    } else {
      u.deletes.push_back(key);
    }
  }
  u.relisted = std::move(relisted_);
  waiting_.clear();
  relisted_.clear();
  return u;
}

std::vector<resource_status> watcher::status() const {
  std::lock_guard lock(mu_);
  auto out = status_;
  const int64_t now = steady_ms();
  for (size_t i = 0; i < out.size(); ++i) {
    if (now - backoff_at_ms_[i] > static_cast<int64_t>(backoff::kResetMs)) out[i].backoff_ms = 0;
  }
  return out;
}

void watcher::note(size_t index, const std::function<void(resource_status&)>& fn) {
  std::lock_guard lock(mu_);
  fn(status_[index]);
}

bool watcher::pause(uint64_t ms) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, std::chrono::milliseconds(ms), [&] { return stop_.load(); });
  return !stop_.load();
}

void watcher::deliver(size_t index, std::vector<model::object> objects, bool relist) {
  {
    std::lock_guard lock(mu_);
    const std::string& kind = resources_[index].kind;
    if (relist) {
      status_[index].synced = true;  // before the wake-up: take() checks it
      // The list is the whole truth for its kind: what waited for it is superseded.
      std::erase_if(waiting_, [&](const auto& kv) { return std::get<0>(kv.first) == kind; });
      if (std::find(relisted_.begin(), relisted_.end(), kind) == relisted_.end()) {
        relisted_.push_back(kind);
      }
    }
    for (auto& o : objects) {
      const auto& m = model::meta_of(o);
      waiting_.insert_or_assign({kind, m.ns, m.name}, std::move(o));
    }
  }
  uint64_t one = 1;
  [[maybe_unused]] auto put = write(wake_fd_, &one, sizeof one);
}

void watcher::deliver_delete(object_key key) {
  {
    std::lock_guard lock(mu_);
    waiting_.insert_or_assign(std::move(key), std::nullopt);
  }
  uint64_t one = 1;
  [[maybe_unused]] auto put = write(wake_fd_, &one, sizeof one);
}

void watcher::run(size_t index) {
  backoff wait_for(std::random_device{}() ^ (uint64_t{std::random_device{}()} << 32) ^ index,
                   cfg_.backoff_initial_ms, cfg_.backoff_max_ms);
  log_limiter log;
  std::string rv;  // the last resourceVersion seen: kept across errors to watch on from it
  // Every end of list_and_watch but a stop waits a back-off, as client-go's reflector
  // waits between ListAndWatch calls: errors, a 410 (relist), a very short watch.
  while (!stop_.load()) {
    std::string error;
    bool too_large = false;
    try {
      if (list_and_watch(index, rv) == ended::stopped) break;
    } catch (const too_large_error& e) {
      error = e.what();
      too_large = true;
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (stop_.load()) break;
    const int64_t now = steady_ms();
    const uint64_t wait = wait_for.next(now);
    {
      std::lock_guard lock(mu_);
      auto& s = status_[index];
      s.connected = false;
      s.backoff_ms = wait;
      backoff_at_ms_[index] = now;
      if (!error.empty()) {
        ++s.errors;
        s.too_large += too_large;
        s.last_error = error;
      }
    }
    uint64_t left_out = 0;
    if (log.allow(left_out)) {
      if (error.empty()) {
        spdlog::info("kubernetes {}: resourceVersion expired (410); listing again in {} ms{}",
                     resources_[index].kind, wait, suppressed_note(left_out));
      } else {
        spdlog::warn("kubernetes {}: {}; retrying in {} ms{}", resources_[index].kind, error, wait,
                     suppressed_note(left_out));
      }
    }
    if (!pause(wait)) break;
  }
}

watcher::ended watcher::list_and_watch(size_t index, std::string& rv) {
  const resource& res = resources_[index];
  http client(creds_, stop_);
  std::string selectors;
  if (!res.label_selector.empty()) selectors += "&labelSelector=" + escape(res.label_selector);
  if (!res.field_selector.empty()) selectors += "&fieldSelector=" + escape(res.field_selector);
  const std::string origin = creds_.server + res.path;
  std::mt19937_64 rng(std::random_device{}());
  log_limiter skip_log;

  auto skipped = [&](const std::string& why) {
    note(index, [](resource_status& s) { ++s.skipped; });
    uint64_t left_out = 0;
    if (skip_log.allow(left_out)) {
      spdlog::warn("kubernetes: skipped {}{}", why, suppressed_note(left_out));
    }
  };
  auto decode = [&](json& obj, std::vector<model::object>& out) {
    if (!obj.is_object()) {
      skipped(res.kind + " list item: not an object, got " + obj.type_name());
      return;
    }
    // List items carry no kind or apiVersion; watch events do.
    obj["kind"] = res.kind;
    obj["apiVersion"] = res.api_version;
    auto o = model::parse_object(obj, origin);
    if (o) {
      out.push_back(std::move(*o));
      return;
    }
    // The API server accepted it, but ferry cannot decode it (a field it refuses): it is
    // left out, and said so, rather than stopping the whole source.
    skipped(o.message());
  };
  auto parse = [&](std::string_view text, const std::string& what) {
    if (nested_deeper_than(text, kMaxJsonDepth)) {
      throw too_large_error(what + " is nested deeper than " + std::to_string(kMaxJsonDepth) +
                            " levels");
    }
    return json::parse(text, nullptr, false);
  };

  for (;;) {
    if (rv.empty()) {
      // A full, paged list (limit/continue), then one delivery: the store swaps the kind's
      // API objects for this set in one publish. Bounded in objects and bytes over all
      // pages, so a server that answers `continue` forever cannot grow it without end.
      std::vector<model::object> all;
      std::string cont;
      uint64_t bytes = 0, objects = 0;
      do {
        std::string q = res.path + "?limit=" + std::to_string(cfg_.page_size) + selectors;
        if (!cont.empty()) q += "&continue=" + escape(cont);
        const uint64_t budget = cfg_.max_list_bytes - bytes;
        auto r = client.get(q, 120, budget, 0);
        if (r.stopped) return ended::stopped;
        if (r.too_large && r.status == 200) {
          throw too_large_error("list " + origin + ": over kubernetes.max_list_bytes (" +
                                std::to_string(cfg_.max_list_bytes) + " bytes)");
        }
        if (!r.error.empty()) throw std::runtime_error("list " + origin + ": " + r.error);
        if (r.status == 410 && !cont.empty()) {
          // The continue token expired mid-list: list again (after a back-off).
          rv.clear();
          return ended::expired;
        }
        if (r.status != 200) {
          throw std::runtime_error("list " + origin + ": " + status_message(r.status, r.body));
        }
        bytes += r.body.size();
        auto page = parse(r.body, "list " + origin + ": the answer");
        std::string().swap(r.body);
        const json* items = member(page, "items");
        if (!page.is_object() || !items || !items->is_array()) {
          throw std::runtime_error("list " + origin + ": the answer is not a " + res.kind + "List");
        }
        // An empty page counts as one: pages are bounded too.
        objects += std::max<size_t>(items->size(), 1);
        if (objects > cfg_.max_list_objects) {
          throw too_large_error("list " + origin + ": over kubernetes.max_list_objects (" +
                                std::to_string(cfg_.max_list_objects) + ")");
        }
        for (auto& item : page["items"]) decode(item, all);
        try {
          const json empty = json::object();
          const json* meta = member(page, "metadata");
          if (!meta) meta = &empty;
          cont = string_member(*meta, "continue", "metadata.continue").value_or("");
          rv = string_member(*meta, "resourceVersion", "metadata.resourceVersion").value_or("");
        } catch (const field_error& e) {
          throw std::runtime_error("list " + origin + ": " + e.message);
        }
      } while (!cont.empty());
      size_t count = all.size();
      deliver(index, std::move(all), true);
      note(index, [&](resource_status& s) {
        ++s.relists;
        s.resource_version = rv;
        s.last_event_ms = now_ms();
      });
      spdlog::info("kubernetes {}: listed {} at resourceVersion {}", res.kind, count, rv);
    }

    // Watch from rv. client-go asks for a random timeout in [t, 2t) so that watches of
    // many nodes do not all end together.
    long timeout = cfg_.watch_timeout + static_cast<long>(rng() % cfg_.watch_timeout);
    std::string q = res.path + "?watch=1&allowWatchBookmarks=true&resourceVersion=" + escape(rv) +
                    "&timeoutSeconds=" + std::to_string(timeout) + selectors;
    bool gone = false, too_deep = false;
    std::string stream_error;
    uint64_t received = 0;
    auto opened = [&] { note(index, [](resource_status& s) { s.connected = true; }); };
    // One event. Never throws: it runs inside libcurl's write callback.
    auto on_event = [&](std::string_view line) -> bool {
      ++received;
      if (nested_deeper_than(line, kMaxJsonDepth)) {
        too_deep = true;
        stream_error = "watch " + origin + ": an event is nested deeper than " +
                       std::to_string(kMaxJsonDepth) + " levels";
        return false;
      }
      auto ev = json::parse(line, nullptr, false);
      const json* type_v = member(ev, "type");
      const json* obj_v = member(ev, "object");
      if (!type_v || !type_v->is_string() || !obj_v || !obj_v->is_object()) {
        stream_error = "watch " + origin + ": not a watch event: " + shown(line);
        return false;
      }
      const std::string type = type_v->get<std::string>();
      json& obj = ev["object"];
      if (type == "ERROR") {
        const json* code_v = member(obj, "code");
        long code = code_v && code_v->is_number_integer() ? code_v->get<long>() : 0;
        if (code == 410) {
          gone = true;
        } else {
          std::string text = status_text(obj);
          stream_error = "watch " + origin + ": ERROR event" +
                         (code ? ", code " + std::to_string(code) : ", no numeric code") +
                         (text.empty() ? "" : ": " + text);
        }
        return false;
      }
      if (type != "ADDED" && type != "MODIFIED" && type != "DELETED" && type != "BOOKMARK") {
        stream_error = "watch " + origin + ": unknown event type " + shown(type);
        return false;
      }
      std::string event_rv;
      std::optional<object_key> key;
      try {
        if (type != "BOOKMARK") key = key_of(obj, res.kind);
        if (const json* m = member(obj, "metadata")) {
          event_rv = string_member(*m, "resourceVersion", "metadata.resourceVersion").value_or("");
        }
      } catch (const field_error& e) {
        // Undecodable: left out, naming the object and field. The next good event moves rv
        // past it, so a re-watch does not stop at it again.
        std::string what = res.kind;
        if (key) what += " " + std::get<1>(*key) + "/" + shown(std::get<2>(*key));
        skipped(what + " (" + type + " event): " + e.message);
        return true;
      }
      if (type == "ADDED" || type == "MODIFIED") {
        std::vector<model::object> one;
        decode(obj, one);
        if (one.empty()) {
          deliver_delete(*key);  // refused now: what ferry had is stale
        } else {
          deliver(index, std::move(one), false);
        }
      } else if (type == "DELETED") {
        deliver_delete(*key);
      }
      if (!event_rv.empty()) rv = event_rv;  // BOOKMARKs move it too
      note(index, [&](resource_status& s) {
        (type == "BOOKMARK" ? s.bookmarks : s.events)++;
        s.resource_version = rv;
        s.last_event_ms = now_ms();
      });
      return true;
    };
    const int64_t started = steady_ms();
    auto r = client.get(
        q, timeout + 30, kMaxErrorBody, cfg_.max_event_bytes,
        [&](std::string_view line) {
          try {
            return on_event(line);
          } catch (const std::exception& e) {
            stream_error = "watch " + origin + ": " + e.what();
          }
          return false;
        },
        opened);
    note(index, [](resource_status& s) { s.connected = false; });
    if (stop_.load()) return ended::stopped;
    if (gone || r.status == 410) {
      // "too old resource version": the history we need is compacted away. List again.
      spdlog::debug("kubernetes {}: resourceVersion {} expired (410)", res.kind, rv);
      rv.clear();
      return ended::expired;
    }
    if (too_deep) throw too_large_error(stream_error);
    if (!stream_error.empty()) throw std::runtime_error(stream_error);
    if (r.too_large && r.status == 200) {
      throw too_large_error("watch " + origin + ": " + r.error + " (kubernetes.max_event_bytes)");
    }
    if (!r.error.empty()) throw std::runtime_error("watch " + origin + ": " + r.error);
    if (r.status != 200) {
      throw std::runtime_error("watch " + origin + ": " + status_message(r.status, r.body));
    }
    const int64_t lasted = steady_ms() - started;
    if (received == 0 && lasted < kShortWatchMs) {
      throw std::runtime_error("watch " + origin +
                               ": very short watch: the server ended it after " +
                               std::to_string(lasted) + " ms with no event");
    }
    // The server ended the stream (timeoutSeconds, or it is shutting down): watch again
    // from the last resourceVersion seen.
    spdlog::debug("kubernetes {}: watch ended at resourceVersion {}", res.kind, rv);
  }
}

}  // namespace ferry::control::kube
