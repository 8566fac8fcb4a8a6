#include "socket_server.hpp"

#include <grp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace ferry::control {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

sockaddr_un address_of(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  return addr;
}

// A bare blocking client, for sending what call() never would (bad JSON, nothing at all).
int connect_raw(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  auto addr = address_of(path);
  if (fd < 0 || ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    ADD_FAILURE() << "connect " << path << ": " << std::strerror(errno);
  }
  return fd;
}

void send_raw(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return;  // the server may stop reading early; its answer is what we check
    done += static_cast<size_t>(n);
  }
}

std::string read_raw(int fd) {
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) out.append(buf, static_cast<size_t>(n));
  return out;
}

class SocketServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ferry-ss-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    // A subdirectory that does not exist yet, to exercise mkdir -p.
    path_ = dir_ + "/run/ferry/ferry.sock";
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<socket_server> listen(socket_server::handler h, socket_options options = {}) {
    auto server = socket_server::listen(path_, std::move(h), std::move(options));
    EXPECT_TRUE(server.ok()) << server.message();
    return server.ok() ? std::move(server).value() : nullptr;
  }

  // Runs client on its own thread while this thread serves, as ferryd's control thread would.
  static void serve_while(socket_server& server, const std::function<void()>& client) {
    std::atomic<bool> done{false};
    std::thread t([&] {
      client();
      done = true;
    });
    while (!done) server.poll_once(20);
    t.join();
  }

  json echo_call(socket_server& server, const json& request) {
    json response;
    serve_while(server, [&] {
      auto r = call(path_, request, 10000);
      EXPECT_TRUE(r.ok()) << r.message();
      if (r.ok()) response = *r;
    });
    return response;
  }

  std::string dir_;
  std::string path_;
};

json echo(const json& request) { return {{"ok", true}, {"result", request}}; }

TEST_F(SocketServerTest, RoundTrip) {
  auto server = listen(echo);
  ASSERT_TRUE(server);
  EXPECT_EQ(server->path(), path_);

  struct stat st;
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0660u);

  json request = {{"op", "get"}, {"resource", "services"}, {"text", "caf\xc3\xa9\nline two"}};
  json response = echo_call(*server, request);
  EXPECT_EQ(response, echo(request));

  // The server keeps serving after the first connection.
  EXPECT_EQ(echo_call(*server, {{"op", "stats"}}), echo({{"op", "stats"}}));
}

TEST_F(SocketServerTest, ServesAllPendingConnectionsInOnePoll) {
  int calls = 0;
  auto server = listen([&](const json& request) {
    ++calls;
    return echo(request);
  });
  ASSERT_TRUE(server);
  int fds[3];
  for (int i = 0; i < 3; ++i) {
    fds[i] = connect_raw(path_);
    send_raw(fds[i], json{{"op", "n"}, {"i", i}}.dump() + "\n");
  }
  server->poll_once(1000);
  EXPECT_EQ(calls, 3);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(json::parse(read_raw(fds[i])), echo({{"op", "n"}, {"i", i}}));
    ::close(fds[i]);
  }
}

TEST_F(SocketServerTest, PollTimesOutWithoutClients) {
  auto server = listen(echo);
  ASSERT_TRUE(server);
  auto start = std::chrono::steady_clock::now();
  server->poll_once(50);
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(40));
}

TEST_F(SocketServerTest, BadJsonIsRefusedWithoutCallingHandler) {
  bool called = false;
  auto server = listen([&](const json& r) {
    called = true;
    return echo(r);
  });
  ASSERT_TRUE(server);
  std::string reply;
  serve_while(*server, [&] {
    int fd = connect_raw(path_);
    send_raw(fd, "{\"op\": \n");
    reply = read_raw(fd);
    ::close(fd);
  });
  ASSERT_FALSE(reply.empty());
  EXPECT_EQ(reply.back(), '\n');
  json response = json::parse(reply);
  EXPECT_EQ(response["ok"], false);
  EXPECT_EQ(response["error"].get<std::string>().rfind("bad request: ", 0), 0u) << response;
  EXPECT_FALSE(called);
}

TEST_F(SocketServerTest, NonObjectRequestIsRefused) {
  auto server = listen(echo);
  ASSERT_TRUE(server);
  json response = echo_call(*server, json::array({1, 2}));
  EXPECT_EQ(response,
            json({{"ok", false}, {"error", "bad request: expected a JSON object, got array"}}));
}

TEST_F(SocketServerTest, RequestWithoutNewlineEndsAtEof) {
  auto server = listen(echo);
  ASSERT_TRUE(server);
  std::string reply;
  serve_while(*server, [&] {
    int fd = connect_raw(path_);
    send_raw(fd, R"({"op":"stats"})");
    ::shutdown(fd, SHUT_WR);
    reply = read_raw(fd);
    ::close(fd);
  });
  EXPECT_EQ(json::parse(reply), echo({{"op", "stats"}}));
}

TEST_F(SocketServerTest, HandlerExceptionBecomesError) {
  auto server = listen([](const json&) -> json { throw std::runtime_error("boom: no such op"); });
  ASSERT_TRUE(server);
  json response = echo_call(*server, {{"op", "explode"}});
  EXPECT_EQ(response, json({{"ok", false}, {"error", "boom: no such op"}}));
}

TEST_F(SocketServerTest, OversizedRequestIsRefusedWithoutCallingHandler) {
  const size_t max = socket_options{}.max_request_bytes;
  bool called = false;
  auto server = listen([&](const json& r) {
    called = true;
    return echo(r);
  });
  ASSERT_TRUE(server);
  json response;
  serve_while(*server, [&] {
    auto r = call(path_, {{"op", "apply"}, {"text", std::string(max + 1, 'x')}}, 10000);
    ASSERT_TRUE(r.ok()) << r.message();
    response = *r;
  });
  EXPECT_EQ(response["ok"], false);
  EXPECT_NE(response["error"].get<std::string>().find("request larger than " + std::to_string(max) +
                                                      " bytes"),
            std::string::npos);
  EXPECT_FALSE(called);
  EXPECT_EQ(server->counters().too_large, 1u);
}

TEST_F(SocketServerTest, SlowClientTimesOut) {
  bool called = false;
  auto server = listen([&](const json& r) {
    called = true;
    return echo(r);
  });
  ASSERT_TRUE(server);
  std::string reply;
  auto start = std::chrono::steady_clock::now();
  serve_while(*server, [&] {
    int fd = connect_raw(path_);
    send_raw(fd, R"({"op":)");  // and then nothing: no newline, no EOF
    reply = read_raw(fd);
    ::close(fd);
  });
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  ASSERT_FALSE(reply.empty());
  json response = json::parse(reply);
  EXPECT_EQ(response["ok"], false);
  EXPECT_NE(response["error"].get<std::string>().find("within 5 s"), std::string::npos);
  EXPECT_FALSE(called);
}

// One row per way a request can be wrong: each gets an error naming the problem, the handler
// never sees it, and the server keeps serving.
TEST_F(SocketServerTest, MalformedRequestsAreRefused) {
  struct row {
    std::string name, bytes, error;
  };
  const std::vector<row> rows = {
      {"empty line", "\n", "bad request: empty request"},
      {"not json", "hello\n", "bad request: [json.exception.parse_error"},
      {"truncated json", "{\"op\": \"get\"\n", "bad request: [json.exception.parse_error"},
      {"array", "[1,2]\n", "bad request: expected a JSON object, got array"},
      {"string", "\"get\"\n", "bad request: expected a JSON object, got string"},
      {"number", "42\n", "bad request: expected a JSON object, got number"},
      {"null", "null\n", "bad request: expected a JSON object, got null"},
      {"no op", "{\"resource\":\"services\"}\n", "bad request: missing \"op\""},
      {"op number", "{\"op\":7}\n", "bad request: \"op\" must be a string"},
      {"op null", "{\"op\":null}\n", "bad request: \"op\" must be a string"},
      {"invalid utf-8", "{\"op\":\"get\",\"x\":\"\xff\xfe\"}\n",
       "bad request: [json.exception.parse_error"},
      {"nul byte", std::string("{\"op\":\"get\"\0}\n", 14), "bad request: NUL byte in request"},
      {"two objects", "{\"op\":\"a\"}{\"op\":\"b\"}\n", "bad request: [json.exception.parse_error"},
      {"oversized", std::string(5000, ' ') + "\n", "request larger than 4096 bytes"},
  };
  bool called = false;
  auto server = listen(
      [&](const json& r) {
        called = true;
        return echo(r);
      },
      {.max_request_bytes = 4096});
  ASSERT_TRUE(server);
  for (const auto& r : rows) {
    SCOPED_TRACE(r.name);
    std::string reply;
    serve_while(*server, [&] {
      int fd = connect_raw(path_);
      send_raw(fd, r.bytes);
      reply = read_raw(fd);
      ::close(fd);
    });
    ASSERT_FALSE(reply.empty());
    EXPECT_EQ(reply.back(), '\n');
    json response = json::parse(reply);
    EXPECT_EQ(response["ok"], false);
    EXPECT_EQ(response["error"].get<std::string>().rfind(r.error, 0), 0u) << response;
  }
  EXPECT_FALSE(called);
  EXPECT_EQ(echo_call(*server, {{"op", "stats"}}), echo({{"op", "stats"}}));
}

TEST_F(SocketServerTest, WrongFieldTypeInHandlerIsABadRequest) {
  auto server = listen([](const json& r) {
    (void)r.value("resource", std::string());  // throws type_error on a number
    return echo(r);
  });
  ASSERT_TRUE(server);
  json response = echo_call(*server, {{"op", "get"}, {"resource", 5}});
  EXPECT_EQ(response["ok"], false);
  EXPECT_EQ(
      response["error"].get<std::string>().rfind("bad request: a field has the wrong type", 0), 0u)
      << response;
}

TEST_F(SocketServerTest, AnswerRequestNeverThrows) {
  auto throws = [](const json&) -> json { throw 42; };
  EXPECT_EQ(answer_request("{\"op\":\"x\"}", throws)["error"],
            "internal error: unknown exception in request handler");
  EXPECT_EQ(answer_request("{\"op\":\"x\"}", echo), echo({{"op", "x"}}));
}

// Stalled clients (half a request, never finished) must not hold up the others: while 20 of
// them sit there, 30 more each get their answer at once, and the stalled ones are dropped
// after the IO timeout.
TEST_F(SocketServerTest, StalledClientsDoNotBlockOthers) {
  auto server = listen(echo, {.io_timeout = std::chrono::milliseconds(3000)});
  ASSERT_TRUE(server);
  std::vector<int> stalled;
  for (int i = 0; i < 20; ++i) {
    stalled.push_back(connect_raw(path_));
    send_raw(stalled.back(), R"({"op":"half)");
  }
  std::atomic<bool> done{false};
  std::atomic<int> answered{0};
  auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> clients;
  for (int i = 0; i < 30; ++i) {
    clients.emplace_back([&, i] {
      auto r = call(path_, {{"op", "n"}, {"i", i}}, 10000);
      if (r.ok() && *r == echo({{"op", "n"}, {"i", i}})) ++answered;
    });
  }
  std::thread joiner([&] {
    for (auto& t : clients) t.join();
    done = true;
  });
  while (!done) server->poll_once(20);
  joiner.join();
  EXPECT_EQ(answered, 30);
  // Well before the stalled ones time out, even on a loaded machine.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(2500));
  EXPECT_EQ(server->connections(), 20u);  // the stalled ones are still waiting

  while (std::chrono::steady_clock::now() - start < std::chrono::milliseconds(4000)) {
    server->poll_once(50);
  }
  EXPECT_EQ(server->connections(), 0u);
  for (int fd : stalled) {
    json response = json::parse(read_raw(fd));
    EXPECT_NE(response["error"].get<std::string>().find("not received within 3 s"),
              std::string::npos)
        << response;
    ::close(fd);
  }
}

// Idle connections (connected, nothing sent) must not lock clients out: when every slot is
// taken, a new client evicts the connection idle longest, which is told why. 200 idle ones
// against 4 slots; before, they held the slots and the client waited in the backlog.
TEST_F(SocketServerTest, IdleConnectionsAreEvictedNotQueuedAhead) {
  auto server = listen(echo, {.max_connections = 4});
  ASSERT_TRUE(server);
  std::vector<int> idle;
  for (int i = 0; i < 200; ++i) idle.push_back(connect_raw(path_));
  for (int i = 0; i < 5; ++i) server->poll_once(20);
  EXPECT_LE(server->connections(), 4u);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(echo_call(*server, {{"op", "n"}}), echo({{"op", "n"}}));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  EXPECT_GE(server->counters().evicted, 196u);
  EXPECT_EQ(server->counters().timed_out, 0u);
  // The first was evicted at once, with the reason.
  json first = json::parse(read_raw(idle.front()));
  EXPECT_EQ(first["error"],
            "closed: all 4 control socket connections were in use and this one was idle longest");
  for (int fd : idle) ::close(fd);
}

// A client that connects and sends at once is never evicted, even in a flood of idle ones:
// it gets at least the poll that accepted it, and an active connection outlives idle ones.
TEST_F(SocketServerTest, ClientsAmongIdleConnectionsAreAllServed) {
  auto server = listen(echo, {.max_connections = 4});
  ASSERT_TRUE(server);
  std::vector<int> idle, clients;
  for (int i = 0; i < 30; ++i) {
    idle.push_back(connect_raw(path_));
    clients.push_back(connect_raw(path_));
    send_raw(clients.back(), json{{"op", "n"}, {"i", i}}.dump() + "\n");
  }
  for (int i = 0; i < 30; ++i) server->poll_once(20);
  for (int i = 0; i < 30; ++i) {
    EXPECT_EQ(json::parse(read_raw(clients[i])), echo({{"op", "n"}, {"i", i}}));
    ::close(clients[i]);
  }
  for (int fd : idle) ::close(fd);
}

// Unfinished requests together hold at most max_buffered_bytes: beyond it the oldest is dropped
// (told why), and a complete request still gets through. Before, 5 x 900 KB stayed buffered
// (64 slots x 64 MiB unfinished requests could hold 4 GiB).
TEST_F(SocketServerTest, UnfinishedRequestsShareAMemoryBudget) {
  bool called = false;
  auto server = listen(
      [&](const json& r) {
        called = true;
        return echo(r);
      },
      {.max_request_bytes = 1 << 20, .max_buffered_bytes = 2 << 20});
  ASSERT_TRUE(server);
  std::vector<int> fds;
  const std::string part = R"({"op":"apply","text":")" + std::string(900 << 10, 'x');
  for (int i = 0; i < 5; ++i) {
    fds.push_back(connect_raw(path_));
    serve_while(*server, [&] { send_raw(fds.back(), part); });
    for (int k = 0; k < 5; ++k) server->poll_once(10);
    EXPECT_LE(server->buffered_bytes(), size_t{2} << 20);
  }
  EXPECT_EQ(server->counters().over_budget, 3u);
  EXPECT_FALSE(called);
  for (int i = 0; i < 3; ++i) {
    ::shutdown(fds[i], SHUT_WR);
    json r = json::parse(read_raw(fds[i]));
    EXPECT_EQ(r["error"],
              "dropped: unfinished requests held more than 2097152 bytes together, and this one "
              "was the oldest");
  }
  EXPECT_EQ(echo_call(*server, {{"op", "n"}}), echo({{"op", "n"}}));
  for (int fd : fds) ::close(fd);
}

// A request nested deeper than kMaxRequestDepth is refused as its bytes arrive, before any
// decoding: 60,000 levels in 120 KB used to reach the handler, and printing it (an echo, an
// error message, a log line) overflowed the stack.
TEST_F(SocketServerTest, DeepRequestsAreRefusedBeforeDecoding) {
  bool called = false;
  auto server = listen([&](const json& r) {
    called = true;
    return echo(r);
  });
  ASSERT_TRUE(server);
  const std::string deep = std::string(60000, '[') + std::string(60000, ']');
  for (const std::string& text :
       {R"({"op":"weight","weight":)" + deep + "}\n", R"({"op":"flush","x":)" + deep + "}\n",
        R"({"op":"get","resource":"flows","limit":)" + deep + "}\n"}) {
    std::string reply;
    serve_while(*server, [&] {
      int fd = connect_raw(path_);
      send_raw(fd, text);
      reply = read_raw(fd);
      ::close(fd);
    });
    ASSERT_FALSE(reply.empty());
    EXPECT_EQ(json::parse(reply)["error"],
              "bad request: nested deeper than 32 levels of arrays and objects");
  }
  EXPECT_FALSE(called);
  EXPECT_EQ(server->counters().too_deep, 3u);
  // The same check in answer_request (the fuzz target's and any other caller's way in).
  EXPECT_EQ(answer_request(R"({"op":"x","v":)" + deep + "}", echo)["error"],
            "bad request: nested deeper than 32 levels of arrays and objects");
  // 32 levels are fine: the limit is far above what any request needs (3).
  const std::string ok = R"({"op":"x","v":)" + std::string(31, '[') + std::string(31, ']') + "}";
  EXPECT_EQ(answer_request(ok, echo)["ok"], true);
}

TEST(NestingScanner, CountsBracketsOutsideStringsAcrossPieces) {
  EXPECT_EQ(nesting_scanner().feed(R"({"a":[1,[2]],"b":{}})"), 3u);
  EXPECT_EQ(nesting_scanner().feed(R"({"a":"[[[[{{{{"})"), 1u);
  EXPECT_EQ(nesting_scanner().feed(R"({"a":"\"[[[","b":"\\"})"), 1u);
  EXPECT_EQ(nesting_scanner().feed(R"({"a":"\\",[[[1]]]})"), 4u);
  EXPECT_EQ(nesting_scanner().feed("]]]]{"), 1u);  // malformed: never below zero
  nesting_scanner s;                               // an escape split between two pieces
  s.feed(R"({"a":"\)");
  EXPECT_EQ(s.feed(R"("[[[[","b":[]})"), 2u);
}

TEST(DescribeValue, ScalarsAsJsonStringsCutContainersByType) {
  using nlohmann::json;
  EXPECT_EQ(describe_value(json(7)), "7");
  EXPECT_EQ(describe_value(json(-1.5)), "-1.5");
  EXPECT_EQ(describe_value(json(true)), "true");
  EXPECT_EQ(describe_value(json()), "null");
  EXPECT_EQ(describe_value(json("a\"b")), "\"a\\\"b\"");
  EXPECT_EQ(describe_value(json(std::string(100, 'x'))),
            "\"" + std::string(64, 'x') + "\"... (100 bytes)");
  EXPECT_EQ(describe_value(json::object()), "an object");
  EXPECT_EQ(describe_value(json::array()), "an array");
}

TEST_F(SocketServerTest, GroupIsSetOnTheSocketFile) {
  auto server = listen(echo, {.group = 12345});
  ASSERT_TRUE(server);
  struct stat st;
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_gid, 12345u);
  EXPECT_EQ(st.st_uid, ::geteuid());
  EXPECT_EQ(st.st_mode & 0777, 0660u);
}

// A client that is not root, not ferryd's user and not in the socket's group is refused by
// its credentials, even when the file mode would let it connect. Needs root to change user.
TEST_F(SocketServerTest, PeerOutsideTheGroupIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another user";
  for (gid_t allowed : {gid_t{4242}, gid_t{65534}}) {
    SCOPED_TRACE(allowed);
    auto server = listen(echo, {.group = allowed});
    ASSERT_TRUE(server);
    // Let the kernel's file permission check pass, so the peer check is what decides.
    ::chmod(path_.c_str(), 0666);
    for (auto p = fs::path(path_).parent_path(); p.string().size() >= dir_.size();
         p = p.parent_path()) {
      ::chmod(p.c_str(), 0755);
    }
    int out[2];
    ASSERT_EQ(::pipe(out), 0);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(out[0]);
      gid_t none[] = {};
      if (::setgroups(0, none) != 0 || ::setresgid(65534, 65534, 65534) != 0 ||
          ::setresuid(65534, 65534, 65534) != 0) {
        ::_exit(3);
      }
      auto r = call(path_, {{"op", "stats"}}, 5000);
      std::string text = r.ok() ? r->dump() : "call failed: " + r.message();
      (void)!::write(out[1], text.data(), text.size());
      ::_exit(0);
    }
    ::close(out[1]);
    std::string reply;
    serve_while(*server, [&] {
      char buf[4096];
      ssize_t n;
      while ((n = ::read(out[0], buf, sizeof(buf))) > 0) reply.append(buf, static_cast<size_t>(n));
    });
    ::close(out[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
    if (allowed == 65534) {
      EXPECT_EQ(json::parse(reply), echo({{"op", "stats"}})) << reply;  // in the group
    } else {
      json response = json::parse(reply);
      EXPECT_EQ(response["ok"], false);
      EXPECT_EQ(
          response["error"].get<std::string>().rfind("permission denied: uid 65534 is not root", 0),
          0u)
          << response;
    }
    server.reset();
  }
}

TEST_F(SocketServerTest, StaleSocketFileIsReplaced) {
  // What a crashed ferryd leaves behind: a bound socket file with nobody listening.
  fs::create_directories(fs::path(path_).parent_path());
  int stale = ::socket(AF_UNIX, SOCK_STREAM, 0);
  auto addr = address_of(path_);
  ASSERT_EQ(::bind(stale, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0);
  ::close(stale);
  ASSERT_TRUE(fs::is_socket(path_));

  auto server = listen(echo);
  ASSERT_TRUE(server);
  EXPECT_EQ(echo_call(*server, {{"op", "stats"}}), echo({{"op", "stats"}}));
}

TEST_F(SocketServerTest, LiveSocketIsNotStolen) {
  auto first = listen(echo);
  ASSERT_TRUE(first);
  auto second = socket_server::listen(path_, echo);
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.message().find(path_), std::string::npos) << second.message();
  EXPECT_NE(second.message().find("in use"), std::string::npos) << second.message();
  // The probe connection must not disturb the first server.
  first->poll_once(0);
  EXPECT_EQ(echo_call(*first, {{"op", "stats"}}), echo({{"op", "stats"}}));
}

TEST_F(SocketServerTest, RegularFileIsNotReplaced) {
  fs::create_directories(fs::path(path_).parent_path());
  std::ofstream(path_) << "not a socket";
  auto server = socket_server::listen(path_, echo);
  ASSERT_FALSE(server.ok());
  EXPECT_NE(server.message().find("not a socket"), std::string::npos) << server.message();
  EXPECT_TRUE(fs::is_regular_file(path_));
}

TEST_F(SocketServerTest, UnusableDirectoryIsReported) {
  fs::create_directories(dir_);
  std::ofstream(dir_ + "/file") << "x";
  auto server = socket_server::listen(dir_ + "/file/ferry.sock", echo);
  ASSERT_FALSE(server.ok());
  EXPECT_NE(server.message().find(dir_ + "/file"), std::string::npos) << server.message();
}

TEST_F(SocketServerTest, PathTooLongIsReported) {
  auto server = socket_server::listen(dir_ + "/" + std::string(200, 'x'), echo);
  ASSERT_FALSE(server.ok());
  EXPECT_NE(server.message().find("longer than"), std::string::npos) << server.message();
}

TEST_F(SocketServerTest, DestructorRemovesSocketFile) {
  auto server = listen(echo);
  ASSERT_TRUE(server);
  EXPECT_TRUE(fs::exists(path_));
  server.reset();
  EXPECT_FALSE(fs::exists(path_));
}

TEST_F(SocketServerTest, ConnectErrorWhenNoServer) {
  auto r = call(path_, {{"op", "stats"}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.message(), "cannot connect to ferryd at " + path_ +
                             ": No such file or directory (is ferryd running?)");
}

TEST_F(SocketServerTest, ConnectErrorWhenServerGone) {
  {
    auto server = listen(echo);
    ASSERT_TRUE(server);
  }
  // Simulate a crash that left the file behind: bind without listen.
  int stale = ::socket(AF_UNIX, SOCK_STREAM, 0);
  auto addr = address_of(path_);
  ASSERT_EQ(::bind(stale, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0);
  ::close(stale);
  auto r = call(path_, {{"op", "stats"}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.message(),
            "cannot connect to ferryd at " + path_ + ": Connection refused (is ferryd running?)");
}

TEST_F(SocketServerTest, CallTimesOutWhenNobodyServes) {
  auto server = listen(echo);
  ASSERT_TRUE(server);
  // Nobody calls poll_once: the connection sits in the backlog until the client gives up.
  auto r = call(path_, {{"op", "stats"}}, 100);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.message().find("timed out"), std::string::npos) << r.message();
}

}  // namespace
}  // namespace ferry::control
