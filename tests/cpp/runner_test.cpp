#include "nimbus/workflow/runner.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "nimbus/core/error.h"

namespace nimbus {
namespace {
namespace fs = std::filesystem;

// Ops that copy their input after a pause, recording how many run at once.
struct Probe {
  std::atomic<int> running{0};
  std::atomic<int> max_running{0};
  std::atomic<int> calls{0};
};

OpDefinition slow_copy_op(const std::string& name, Probe& probe, bool fail = false) {
  OpDefinition op;
  op.name = name;
  op.op_dir = name;
  op.inputs = {{"in", "Raster", ""}};
  op.outputs = {{"out", "Raster", ""}};
  op.run = [&probe, fail](const OpRunContext& ctx) {
    const int now = ++probe.running;
    int prev = probe.max_running.load();
    while (now > prev && !probe.max_running.compare_exchange_weak(prev, now)) {
    }
    ++probe.calls;
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    --probe.running;
    if (fail) throw InputError("task " + ctx.task + " failed on purpose");
    const std::string out = ctx.output_dir + "/out.tif";
    fs::copy_file(ctx.inputs.at("in").path, out);
    return OpOutputs{{"out", Artifact{out, "Raster", ""}}};
  };
  return op;
}

class RunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("nimbus_runner_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    std::ofstream(dir_ / "input.tif") << "data";
  }
  void TearDown() override { fs::remove_all(dir_); }

  // a -> c, b -> c (c takes a's output); a and b are independent.
  WorkflowGraph diamond(const OpDefinition& a, const OpDefinition& b, const OpDefinition& c) {
    WorkflowGraph g;
    g.name = "diamond";
    g.nodes = {{"a", &a, Json::object(), {}}, {"b", &b, Json::object(), {}}, {"c", &c, Json::object(), {}}};
    g.sources = {{"src", {PortRef{"a", "in"}, PortRef{"b", "in"}}}};
    g.edges = {{PortRef{"a", "out"}, PortRef{"c", "in"}}};
    g.sinks = {{"result", PortRef{"c", "out"}}, {"side", PortRef{"b", "out"}}};
    return g;
  }

  RunOptions options(bool cache) {
    RunOptions o;
    o.inputs = {{"src", (dir_ / "input.tif").string()}};
    o.out_dir = (dir_ / "out").string();
    if (cache) o.cache_dir = (dir_ / "cache").string();
    return o;
  }

  fs::path dir_;
};

TEST_F(RunnerTest, IndependentTasksRunConcurrently) {
  Probe probe;
  const OpDefinition a = slow_copy_op("a", probe), b = slow_copy_op("b", probe), c = slow_copy_op("c", probe);
  const RunReport r = run_workflow(diamond(a, b, c), options(false));
  EXPECT_EQ(probe.max_running.load(), 2);
  EXPECT_EQ(r.tasks.back().node, "c");  // waits for a
  EXPECT_TRUE(fs::exists(r.outputs.at("result")));
  EXPECT_FALSE(fs::exists(dir_ / "out" / ".nimbus-work"));
}

TEST_F(RunnerTest, OneTaskAtATimeWhenAsked) {
  Probe probe;
  const OpDefinition a = slow_copy_op("a", probe), b = slow_copy_op("b", probe), c = slow_copy_op("c", probe);
  RunOptions o = options(false);
  o.max_parallel_tasks = 1;
  run_workflow(diamond(a, b, c), o);
  EXPECT_EQ(probe.max_running.load(), 1);
}

TEST_F(RunnerTest, SecondRunIsServedFromTheCache) {
  Probe probe;
  const OpDefinition a = slow_copy_op("a", probe), b = slow_copy_op("b", probe), c = slow_copy_op("c", probe);
  run_workflow(diamond(a, b, c), options(true));
  EXPECT_EQ(probe.calls.load(), 3);
  // The sinks are there now: a second run into the same directory replaces them.
  EXPECT_THROW(run_workflow(diamond(a, b, c), options(true)), InputError);
  EXPECT_EQ(probe.calls.load(), 3);
  RunOptions replace = options(true);
  replace.overwrite = true;
  const RunReport again = run_workflow(diamond(a, b, c), replace);
  EXPECT_EQ(probe.calls.load(), 3);
  for (const TaskRun& t : again.tasks) EXPECT_TRUE(t.cache_hit) << t.node;
}

TEST_F(RunnerTest, FailureStopsDependentsAndPublishesNothing) {
  Probe probe;
  const OpDefinition a = slow_copy_op("a", probe, /*fail=*/true), b = slow_copy_op("b", probe),
                     c = slow_copy_op("c", probe);
  EXPECT_THROW(run_workflow(diamond(a, b, c), options(true)), InputError);
  EXPECT_EQ(probe.calls.load(), 2);  // c never started
  EXPECT_FALSE(fs::exists(dir_ / "out" / "result.tif"));
  EXPECT_FALSE(fs::exists(dir_ / "out" / "side.tif"));
  for (const auto& e : fs::recursive_directory_iterator(dir_ / "cache")) {
    EXPECT_EQ(e.path().string().find(".partial-"), std::string::npos) << e.path();
  }
}

}  // namespace
}  // namespace nimbus
