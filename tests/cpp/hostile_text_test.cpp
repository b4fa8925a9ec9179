// Text that reached the workflow loader from the fuzzer: invalid UTF-8 and YAML
// structures where text is expected must be clean WorkflowErrors, not crashes.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "nimbus/core/utf8.h"
#include "nimbus/workflow/workflow_graph.h"
#include "nimbus/workflow/workflow_spec.h"

namespace nimbus {
namespace {

TEST(Utf8, AcceptsWellFormedText) {
  EXPECT_EQ(invalid_utf8_offset(""), std::string_view::npos);
  EXPECT_EQ(invalid_utf8_offset("plain ascii"), std::string_view::npos);
  EXPECT_EQ(invalid_utf8_offset("sc\xC3\xA9ne \xE2\x82\xAC \xF0\x9F\x8C\xA7"), std::string_view::npos);  // é € 🌧
}

TEST(Utf8, FindsTheFirstBadByte) {
  EXPECT_EQ(invalid_utf8_offset("ab\xCE"), 2u);              // truncated sequence
  EXPECT_EQ(invalid_utf8_offset("a\xE9t\xC3\xA9"), 1u);      // Latin-1 é
  EXPECT_EQ(invalid_utf8_offset("\xC0\xAF"), 0u);             // overlong '/'
  EXPECT_EQ(invalid_utf8_offset("x\xED\xA0\x80"), 1u);       // UTF-16 surrogate
  EXPECT_EQ(invalid_utf8_offset("\xF4\x90\x80\x80"), 0u);    // above U+10FFFF
  EXPECT_EQ(invalid_utf8_offset("ok\x80"), 2u);               // stray continuation byte
}

class HostileWorkflowText : public ::testing::Test {
 protected:
  std::string write(const std::string& text) {
    dir_ = std::filesystem::temp_directory_path() /
           ("nimbus-hostile-" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    std::filesystem::create_directories(dir_);
    const auto path = dir_ / "w.yaml";
    std::ofstream(path, std::ios::binary) << text;
    return path.string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

std::string error_of(const std::string& path) {
  try {
    build_workflow_graph(path, Json::object(), WorkflowLibrary{std::filesystem::path(path).parent_path().string()});
  } catch (const WorkflowError& e) {
    return e.what();
  }
  return "no error";
}

TEST_F(HostileWorkflowText, InvalidUtf8NamesTheLine) {
  const std::string path = write("name: w\nsources:\n  s: [a.b]\nparameters:\n  thr: 0\xCE\x01\n");
  const std::string e = error_of(path);
  EXPECT_NE(e.find(path + ":5:"), std::string::npos) << e;
  EXPECT_NE(e.find("0xCE is not valid UTF-8"), std::string::npos) << e;
}

TEST_F(HostileWorkflowText, MappingAsAKeyIsAStructureError) {
  const std::string path = write("? {a: 1}\n: x\nname: w\n");
  const std::string e = error_of(path);
  EXPECT_NE(e.find(path + ":"), std::string::npos) << e;
  EXPECT_NE(e.find("keys and names must be plain text"), std::string::npos) << e;
}

}  // namespace
}  // namespace nimbus
