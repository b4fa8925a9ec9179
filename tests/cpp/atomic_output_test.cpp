#include "nimbus/raster/atomic_output.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "nimbus/core/error.h"

namespace nimbus {
namespace {
namespace fs = std::filesystem;

class AtomicOutputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("nimbus_atomic_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(AtomicOutputTest, NothingAppearsWithoutCommit) {
  const fs::path target = dir_ / "mask.tif";
  {
    AtomicOutput out(target.string(), "--out", OutputRules{});
    std::ofstream(out.temp_path()) << "partial";
  }
  EXPECT_FALSE(fs::exists(target));
  EXPECT_TRUE(fs::is_empty(dir_));
}

TEST_F(AtomicOutputTest, CommitMovesIntoPlace) {
  const fs::path target = dir_ / "mask.tif";
  AtomicOutput out(target.string(), "--out", OutputRules{});
  std::ofstream(out.temp_path()) << "done";
  out.commit();
  EXPECT_TRUE(fs::exists(target));
  EXPECT_FALSE(fs::exists(out.temp_path()));
}

TEST_F(AtomicOutputTest, MissingDirectoryIsAnInputError) {
  EXPECT_THROW(AtomicOutput((dir_ / "nope" / "mask.tif").string(), "--out", OutputRules{}), InputError);
  EXPECT_THROW(AtomicOutput(dir_.string(), "--out", OutputRules{}), InputError);
}

}  // namespace
}  // namespace nimbus
