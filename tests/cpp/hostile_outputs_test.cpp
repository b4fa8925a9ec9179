// Output sets: outputs checked against inputs and each other, published together or
// not at all; temporary names short; GDAL's overview temporaries removed on signals.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <vector>

#include "nimbus/core/error.h"
#include "nimbus/core/interrupt.h"
#include "nimbus/raster/atomic_output.h"
#include "nimbus/pipeline/improve_cloud_mask.h"
#include "nimbus/raster/geotiff_writer.h"
#include "nimbus/raster/raster_reader.h"

#include <gdal_priv.h>
#include <opencv2/core.hpp>

namespace nimbus {
namespace {
namespace fs = std::filesystem;

class OutputSetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("nimbus_outputs_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  static std::string read(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  fs::path dir_;
};

TEST_F(OutputSetTest, FailedCommitRollsBackEveryOutputAndRestoresReplacedFiles) {
  std::ofstream(dir_ / "mask.tif") << "old mask";
  {
    OutputSet outputs({}, OutputRules{/*overwrite=*/true, /*streams=*/false});
    AtomicOutput& mask = outputs.add_file((dir_ / "mask.tif").string(), "--out");
    AtomicOutput& preview = outputs.add_file((dir_ / "p.png").string(), "--preview");
    std::ofstream(mask.temp_path()) << "new mask";
    std::ofstream(preview.temp_path()) << "png";
    // The preview's place becomes a non-empty directory before the commit: its rename fails.
    fs::create_directories(dir_ / "p.png" / "x");
    EXPECT_THROW(outputs.commit(), InputError);
  }
  EXPECT_EQ(read(dir_ / "mask.tif"), "old mask");  // the replaced mask is back
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"mask.tif", "p.png"}));  // no partial, no backup left
}

TEST_F(OutputSetTest, FailedCommitRemovesNewOutputs) {
  {
    OutputSet outputs({}, OutputRules{/*overwrite=*/true, /*streams=*/false});
    AtomicOutput& mask = outputs.add_file((dir_ / "mask.tif").string(), "--out");
    AtomicOutput& report = outputs.add_file((dir_ / "r.json").string(), "--report");
    std::ofstream(mask.temp_path()) << "mask";
    std::ofstream(report.temp_path()) << "{}";
    fs::create_directories(dir_ / "r.json" / "x");
    EXPECT_THROW(outputs.commit(), InputError);
  }
  EXPECT_FALSE(fs::exists(dir_ / "mask.tif"));
}

TEST_F(OutputSetTest, DirectoriesCreatedForAFailedRunAreRemoved) {
  {
    OutputSet outputs({}, OutputRules{/*overwrite=*/true, /*streams=*/false});
    outputs.add_directory((dir_ / "a" / "b").string(), "--keep-probabilities");
    EXPECT_TRUE(fs::is_directory(dir_ / "a" / "b"));
    AtomicOutput& p = outputs.add_file((dir_ / "a" / "b" / "cloud.tif").string(), "--keep-probabilities");
    std::ofstream(p.temp_path()) << "partial";
  }
  EXPECT_TRUE(fs::is_empty(dir_));
}

TEST_F(OutputSetTest, OutputsMayNotBeInputsOrEachOther) {
  std::ofstream(dir_ / "in.tif") << "input";
  fs::create_directories(dir_ / "P.SAFE");
  OutputSet outputs({{(dir_ / "in.tif").string(), "--s2-raster"}, {(dir_ / "P.SAFE").string(), "--s2-raster"}},
                    OutputRules{});
  EXPECT_THROW(outputs.add_file((dir_ / "in.tif").string(), "--out"), InputError);
  EXPECT_THROW(outputs.add_file((dir_ / "P.SAFE" / "MTD_MSIL2A.xml").string(), "--out"), InputError);
  fs::create_hard_link(dir_ / "in.tif", dir_ / "hard.tif");
  EXPECT_THROW(outputs.add_file((dir_ / "hard.tif").string(), "--out"), InputError);
  outputs.add_file((dir_ / "m.tif").string(), "--out");
  EXPECT_THROW(outputs.add_file((dir_ / "." / "m.tif").string(), "--preview"), InputError);
  EXPECT_THROW(outputs.add_directory((dir_ / "m.tif").string(), "--keep-probabilities"), InputError);
  EXPECT_EQ(read(dir_ / "in.tif"), "input");
}

TEST_F(OutputSetTest, TemporaryNamesStayShortForLongOutputNames) {
  const std::string name(250, 'm');
  AtomicOutput out((dir_ / name).string(), "--out", OutputRules{});
  // GDAL adds ".msk.ovr.tmp" to the temporary name; the whole must fit NAME_MAX.
  EXPECT_LE(fs::path(out.temp_path()).filename().string().size() + 12, 255u);
  EXPECT_EQ(partial_name_prefix(std::string(38, 'a') + "\xc3\xa9\xc3\xa9"),
            "." + std::string(38, 'a') + "\xc3\xa9" + ".nimbus-partial-");  // never half a character
}

TEST_F(OutputSetTest, SpecialFilesAreRefused) {
  ASSERT_EQ(::mkfifo((dir_ / "fifo").c_str(), 0600), 0);
  EXPECT_THROW(check_output_path((dir_ / "fifo").string(), "--out"), InputError);
  fs::create_symlink("/proc/self/fd/1", dir_ / "stdout");
  EXPECT_THROW(check_output_path((dir_ / "stdout").string(), "--out"), InputError);
  EXPECT_THROW(check_output_path("-", "--out"), InputError);
  EXPECT_THROW(check_output_path(std::string("a\0b", 3), "--out"), InputError);
  EXPECT_THROW(check_output_path((dir_ / std::string(300, 'x')).string(), "--out"), InputError);
}

TEST_F(OutputSetTest, ExistingFilesAreRefusedUnlessOverwriting) {
  std::ofstream(dir_ / "mask.tif") << "old mask";
  {
    OutputSet outputs({}, OutputRules{});
    EXPECT_THROW(outputs.add_file((dir_ / "mask.tif").string(), "--out"), InputError);
  }
  EXPECT_EQ(read(dir_ / "mask.tif"), "old mask");
  OutputSet outputs({}, OutputRules{/*overwrite=*/true, /*streams=*/false});
  outputs.add_file((dir_ / "mask.tif").string(), "--out").write_bytes("new mask");
  outputs.commit();
  EXPECT_EQ(read(dir_ / "mask.tif"), "new mask");
}

TEST_F(OutputSetTest, AFileThatAppearsDuringTheRunIsNotReplaced) {
  OutputSet outputs({}, OutputRules{});
  outputs.add_file((dir_ / "mask.tif").string(), "--out").write_bytes("new mask");
  std::ofstream(dir_ / "mask.tif") << "someone else's";
  EXPECT_THROW(outputs.commit(), InputError);
  EXPECT_EQ(read(dir_ / "mask.tif"), "someone else's");
}

TEST_F(OutputSetTest, StreamsAreWrittenThroughAndLinksToThemStayLinks) {
  ASSERT_EQ(::mkfifo((dir_ / "fifo").c_str(), 0600), 0);
  fs::create_symlink(dir_ / "fifo", dir_ / "link-to-fifo");
  fs::create_symlink("/dev/null", dir_ / "link-to-null");
  const int reader = ::open((dir_ / "fifo").c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(reader, 0);
  {
    OutputSet outputs({}, OutputRules{});
    AtomicOutput& report = outputs.add_file_or_stream((dir_ / "link-to-fifo").string(), "--report");
    AtomicOutput& preview = outputs.add_file_or_stream((dir_ / "link-to-null").string(), "--preview");
    EXPECT_TRUE(report.is_stream() && preview.is_stream());
    EXPECT_THROW(report.temp_path(), InternalError);
    report.write_bytes("{\"ok\": true}\n");
    preview.write_bytes("png");
    outputs.commit();
  }
  char buffer[64] = {};
  const ssize_t n = ::read(reader, buffer, sizeof buffer - 1);
  ::close(reader);
  EXPECT_EQ(std::string(buffer, n > 0 ? static_cast<std::size_t>(n) : 0), "{\"ok\": true}\n");
  EXPECT_TRUE(fs::is_symlink(dir_ / "link-to-fifo"));
  EXPECT_TRUE(fs::is_symlink(dir_ / "link-to-null"));
  EXPECT_EQ(fs::read_symlink(dir_ / "link-to-null"), "/dev/null");
}

TEST_F(OutputSetTest, AFifoNobodyReadsFailsTheCommitBeforeAnyFileMoves) {
  ASSERT_EQ(::mkfifo((dir_ / "fifo").c_str(), 0600), 0);
  {
    OutputSet outputs({}, OutputRules{});
    outputs.add_file((dir_ / "mask.tif").string(), "--out").write_bytes("mask");
    outputs.add_file_or_stream((dir_ / "fifo").string(), "--report").write_bytes("{}");
    EXPECT_THROW(outputs.commit(), InputError);  // never blocks waiting for a reader
  }
  EXPECT_FALSE(fs::exists(dir_ / "mask.tif"));
}

TEST_F(OutputSetTest, StreamsOnlyWhereAllowed) {
  EXPECT_EQ(check_output_path("-", "--report", OutputRules{false, true}), OutputKind::Stream);
  EXPECT_EQ(check_output_path("/dev/stdout", "--report", OutputRules{false, true}), OutputKind::Stream);
  EXPECT_THROW(check_output_path("/dev/stdout", "--out"), InputError);
  EXPECT_EQ(stream_descriptor("/dev/fd/2"), 2);
  EXPECT_EQ(stream_descriptor("/dev/fd/x"), -1);
  OutputSet outputs({}, OutputRules{});
  outputs.add_file_or_stream("-", "--report");
  EXPECT_THROW(outputs.add_file_or_stream("/dev/stdout", "--preview"), InputError);  // one stream, two outputs
}

// A child process makes an output as the COG writer would (the partial file and
// GDAL's overview temporary next to it), then receives the signal.
int run_child_and_signal(const fs::path& dir, int sig) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    install_interrupt_cleanup();
    AtomicOutput out((dir / "mask.tif").string(), "--out", OutputRules{});
    std::ofstream(out.temp_path()) << "partial";
    std::ofstream(out.temp_path() + ".ovr.tmp") << "overviews";
    std::ofstream(out.temp_path() + ".msk.ovr.tmp") << "mask overviews";
    ::raise(sig);
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST_F(OutputSetTest, SignalsRemoveGdalOverviewTemporariesToo) {
  for (const auto& [sig, code] : {std::pair{SIGTERM, 143}, std::pair{SIGINT, 130}, std::pair{SIGHUP, 129}}) {
    EXPECT_EQ(run_child_and_signal(dir_, sig), code);
    EXPECT_TRUE(fs::is_empty(dir_)) << "signal " << sig;
  }
}

// More temporaries in flight than one slot table holds (a workflow writing many
// outputs at once): every one is registered and removed on a signal.
TEST_F(OutputSetTest, SignalsRemoveEveryTemporaryBeyondTheFirstSlotTable) {
  constexpr int kFiles = 700;
  std::vector<int> slots;
  for (int i = 0; i < kFiles; ++i) slots.push_back(register_temporary((dir_ / ("never" + std::to_string(i))).string()));
  EXPECT_EQ(std::set<int>(slots.begin(), slots.end()).size(), static_cast<std::size_t>(kFiles));
  EXPECT_GE(*std::min_element(slots.begin(), slots.end()), 0);
  for (int slot : slots) unregister_temporary(slot);
  const pid_t pid = ::fork();
  if (pid == 0) {
    install_interrupt_cleanup();
    for (int i = 0; i < kFiles; ++i) {
      const std::string path = (dir_ / ("partial" + std::to_string(i))).string();
      std::ofstream(path) << "partial";
      if (register_temporary(path) < 0) ::_exit(3);
    }
    ::raise(SIGTERM);
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 143);
  EXPECT_TRUE(fs::is_empty(dir_));
}

TEST(CreationOptions, AreCheckedAgainstTheDriverAndNimbusLimits) {
  EXPECT_NO_THROW(validate_creation_options({"COMPRESS=DEFLATE", "blocksize=512", "LEVEL=6", "NUM_THREADS=2"}));
  for (const char* bad : {"BLOCKSIZE=0", "BLOCKSIZE=100000", "BLOCKSIZE=200", "COMPRESS=NOSUCH", "LEVEL=x",
                          "COMPRESS=JPEG", "TARGET_SRS=EPSG:4326", "NOSUCH=1", "=1", "COMPRESS=", "NUM_THREADS=-3",
                          "PREDICTOR=3", "OVERVIEW_COMPRESS=WEBP"}) {
    EXPECT_THROW(validate_creation_options({bad}), InputError) << bad;
  }
}

// A library call changes nothing global it does not restore: --threads sets OpenCV's
// process-wide thread count for the call only.
TEST_F(OutputSetTest, ThreadsOptionIsRestoredAfterTheCall) {
  ensure_gdal_initialised();
  GDALDriver* gtiff = GetGDALDriverManager()->GetDriverByName("GTiff");
  const int size = 520;
  const std::string s2 = (dir_ / "s2.tif").string(), pm = (dir_ / "pm.tif").string();
  GDALDataset* ds = gtiff->Create(s2.c_str(), size, size, 12, GDT_UInt16, nullptr);
  std::vector<std::uint16_t> band(static_cast<std::size_t>(size) * size);
  for (int b = 1; b <= 12; ++b) {
    for (std::size_t i = 0; i < band.size(); ++i) band[i] = static_cast<std::uint16_t>(500 + (i * 7 + b * 13) % 3000);
    ds->GetRasterBand(b)->SetNoDataValue(0);
    ASSERT_EQ(ds->GetRasterBand(b)->RasterIO(GF_Write, 0, 0, size, size, band.data(), size, size, GDT_UInt16, 0, 0),
              CE_None);
  }
  GDALClose(ds);
  GDALDataset* mask = gtiff->Create(pm.c_str(), size, size, 1, GDT_Byte, nullptr);
  std::vector<std::uint8_t> zeros(static_cast<std::size_t>(size) * size, 0);
  ASSERT_EQ(mask->GetRasterBand(1)->RasterIO(GF_Write, 0, 0, size, size, zeros.data(), size, size, GDT_Byte, 0, 0),
            CE_None);
  GDALClose(mask);

  const int before = cv::getNumThreads();
  ImproveCloudMaskOptions o;
  o.s2_raster = s2;
  o.product_mask = pm;
  o.out = (dir_ / "mask.tif").string();
  o.threads = before == 1 ? 2 : 1;
  improve_cloud_mask(o);
  EXPECT_TRUE(fs::exists(o.out));
  EXPECT_EQ(cv::getNumThreads(), before);
}

TEST_F(OutputSetTest, CancelledRunLeavesNothing) {
  ImproveCloudMaskOptions o;
  o.s2_raster = (dir_ / "missing.tif").string();
  o.out = (dir_ / "mask.tif").string();
  o.keep_probabilities_dir = (dir_ / "probs").string();
  o.cancel = [] { return true; };
  EXPECT_THROW(improve_cloud_mask(o), Cancelled);  // checked right after the outputs, before the inputs
  EXPECT_TRUE(fs::is_empty(dir_));
}

}  // namespace
}  // namespace nimbus
