#include "nimbus/inference/model_cache.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "nimbus/inference/backend.h"
#include "nimbus/models/default_models.h"

namespace nimbus {
namespace {

namespace fs = std::filesystem;

class ModelCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("nimbus_model_cache_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  static void write(const fs::path& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << bytes;
  }

  fs::path dir_;
};

const std::string& cloud_v2() { return default_cloud_model().onnx; }
const std::string& cloud_v1() {
  for (const EmbeddedModel& m : embedded_models()) {
    if (std::string(m.name) == "nimbus_cloud_v1") return m.onnx;
  }
  throw std::runtime_error("nimbus_cloud_v1 is not embedded");
}

TEST_F(ModelCacheTest, AFileIsLoadedOnceAndSharedByEveryLookup) {
  const fs::path path = dir_ / "cloud.onnx";
  write(path, cloud_v2());
  ModelLoadCounts counts;
  const auto first = load_model(path.string(), "", "cloud model", &counts);
  const auto second = load_model(path.string(), "", "cloud model", &counts);
  const auto third = load_model(path.filename().string(), dir_.string(), "cloud model", &counts);
  EXPECT_EQ(first.get(), second.get());
  EXPECT_EQ(first.get(), third.get());
  EXPECT_EQ(counts.loaded, 1);
  EXPECT_EQ(counts.reused, 2);
  EXPECT_EQ(first->onnx().origin, path.string());
}

TEST_F(ModelCacheTest, AFileReplacedInPlaceWithOtherContentIsReloaded) {
  const fs::path path = dir_ / "cloud.onnx";
  write(path, cloud_v2());
  const auto before = load_model(path.string(), "", "cloud model");
  write(path, cloud_v1());  // same path, same inode, new bytes
  ModelLoadCounts counts;
  const auto after = load_model(path.string(), "", "cloud model", &counts);
  EXPECT_EQ(counts.loaded, 1);
  EXPECT_NE(before.get(), after.get());
  EXPECT_NE(before->onnx().sha256, after->onnx().sha256);
  EXPECT_EQ(before->onnx().bytes, cloud_v2());  // a run holding the old model keeps it intact
  EXPECT_EQ(after->onnx().bytes, cloud_v1());

  // Renamed over (a new inode), as `cp new tmp && mv tmp model.onnx` does.
  const fs::path staged = dir_ / "staged.onnx";
  write(staged, cloud_v2());
  fs::rename(staged, path);
  const auto renamed = load_model(path.string(), "", "cloud model", &counts);
  EXPECT_EQ(counts.loaded, 2);
  EXPECT_EQ(renamed->onnx().bytes, cloud_v2());
}

TEST_F(ModelCacheTest, AFileTouchedWithTheSameContentIsReusedAfterOneRehash) {
  const fs::path path = dir_ / "cloud.onnx";
  write(path, cloud_v2());
  const auto before = load_model(path.string(), "", "cloud model");
  fs::last_write_time(path, fs::last_write_time(path) + std::chrono::seconds(5));
  ModelLoadCounts counts;
  const auto after = load_model(path.string(), "", "cloud model", &counts);
  EXPECT_EQ(before.get(), after.get());
  EXPECT_EQ(counts.loaded, 0);
  EXPECT_EQ(counts.reused, 1);
}

TEST_F(ModelCacheTest, ConcurrentLookupsLoadTheModelOnce) {
  const fs::path path = dir_ / "cloud.onnx";
  write(path, cloud_v2());
  const ModelCacheTotals start = model_cache_totals();
  std::vector<std::shared_ptr<const LoadedModel>> got(4);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < got.size(); ++i) {
    threads.emplace_back([&, i] { got[i] = load_model(path.string(), "", "cloud model"); });
  }
  for (auto& t : threads) t.join();
  for (const auto& m : got) EXPECT_EQ(m.get(), got[0].get());
  const ModelCacheTotals end = model_cache_totals();
  EXPECT_EQ(end.loaded - start.loaded, 1u);
  EXPECT_EQ(end.reused - start.reused, 3u);
}

TEST_F(ModelCacheTest, EmbeddedModelsAreLoadedOnce) {
  const auto a = load_model("embedded:nimbus_shadow_v1", "", "shadow model");
  ModelLoadCounts counts;
  const auto b = load_model("embedded:nimbus_shadow_v1", "", "shadow model", &counts);
  EXPECT_EQ(a.get(), b.get());
  EXPECT_EQ(counts.loaded, 0);
  EXPECT_EQ(counts.reused, 1);
}

TEST_F(ModelCacheTest, AMissingFileIsStillAnInputErrorAndIsNotCached) {
  const fs::path path = dir_ / "later.onnx";
  EXPECT_THROW(load_model(path.string(), "", "cloud model"), InputError);
  write(path, cloud_v2());
  ModelLoadCounts counts;
  EXPECT_NO_THROW(load_model(path.string(), "", "cloud model", &counts));
  EXPECT_EQ(counts.loaded, 1);
}

TEST_F(ModelCacheTest, KeepsTheMostRecentlyUsedModelsOnly) {
  std::vector<fs::path> paths;
  for (int i = 0; i < 9; ++i) {
    paths.push_back(dir_ / ("m" + std::to_string(i) + ".onnx"));
    write(paths.back(), cloud_v2());
  }
  ModelLoadCounts counts;
  const auto held = load_model(paths[0].string(), "", "model", &counts);
  for (int round = 0; round < 2; ++round) {
    for (std::size_t i = 1; i < 8; ++i) load_model(paths[i].string(), "", "model", &counts);
  }
  EXPECT_EQ(counts.loaded, 8);
  load_model(paths[8].string(), "", "model", &counts);  // the ninth evicts m0, the least recently used
  EXPECT_EQ(counts.loaded, 9);
  const auto again = load_model(paths[0].string(), "", "model", &counts);
  EXPECT_EQ(counts.loaded, 10);
  EXPECT_NE(held.get(), again.get());
  EXPECT_EQ(held->onnx().sha256, again->onnx().sha256);  // the run holding the evicted one still has it
}

// The shared model, per-run backends: two backends on one loaded model run at the
// same time on two threads and give exactly what one backend gives alone.
TEST_F(ModelCacheTest, BackendsSharingOneModelRunConcurrently) {
  const auto model = load_model("embedded:nimbus_cloud_v2", "", "cloud model");
  for (InferenceEngine engine : {InferenceEngine::OneDnn, InferenceEngine::OpenCv}) {
    std::vector<float> input(12 * 64 * 64);
    for (std::size_t i = 0; i < input.size(); ++i) input[i] = static_cast<float>((i * 7919) % 6000);
    std::vector<float> expected;
    make_backend(model, "cloud model", {engine, 1})->run(input.data(), 12, 64, 64, expected);
    std::vector<std::vector<float>> outputs(2);
    std::vector<std::thread> threads;
    for (auto& out : outputs) {
      threads.emplace_back([&] {
        auto backend = make_backend(model, "cloud model", {engine, 1});
        for (int k = 0; k < 3; ++k) backend->run(input.data(), 12, 64, 64, out);
      });
    }
    for (auto& t : threads) t.join();
    for (const auto& out : outputs) EXPECT_EQ(out, expected) << engine_name(engine);
  }
}

}  // namespace
}  // namespace nimbus
