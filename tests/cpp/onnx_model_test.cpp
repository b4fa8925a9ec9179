#include "nimbus/inference/onnx_model.h"

#include <gtest/gtest.h>

#include "nimbus/core/checksum.h"
#include "nimbus/core/error.h"
#include "nimbus/inference/backend.h"
#include "nimbus/models/default_models.h"

namespace nimbus {
namespace {

TEST(OnnxModel, RejectsGitLfsPointerWithAHint) {
  const std::string pointer =
      "version https://git-lfs.github.com/spec/v1\noid sha256:45de808b\nsize 56973507\n";
  try {
    load_onnx_bytes("cloud_model2_cpu.onnx", pointer, "cloud model (--cloud-model)");
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("git lfs pull"), std::string::npos) << e.what();
  }
}

TEST(OnnxModel, RejectsGarbageAndEmpty) {
  EXPECT_THROW(load_onnx_bytes("x", "\x08\x01garbage\xff\xff", "model"), InputError);
  EXPECT_THROW(load_onnx_bytes("x", "", "model"), InputError);
  EXPECT_THROW(load_onnx_file("/nonexistent/model.onnx", "model"), InputError);
}

TEST(OnnxModel, Sha256OfKnownString) {
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(OnnxModel, EmbeddedDefaultsDeclareTheFarmVibesContract) {
  const OnnxModel cloud = load_onnx_bytes("c", default_cloud_model().onnx, "cloud");
  EXPECT_EQ(cloud.contract.channels, 12);
  EXPECT_EQ(cloud.contract.height, 0);  // any chip size
  EXPECT_TRUE(cloud.fixes_applied.empty());
  const OnnxModel shadow = load_onnx_bytes("s", default_shadow_model().onnx, "shadow");
  EXPECT_EQ(shadow.contract.channels, 12);
  EXPECT_EQ(shadow.contract.height, 512);
  EXPECT_EQ(shadow.contract.width, 512);
}

TEST(OpenCvBackend, EmbeddedCloudModelRunsAnyChipSize) {
  auto backend = make_backend(load_onnx_bytes("c", default_cloud_model().onnx, "cloud"), "cloud",
                              {InferenceEngine::OpenCv, 0});
  std::vector<float> input(12 * 64 * 48, 3000.0f);
  std::vector<float> out;
  EXPECT_EQ(backend->run(input.data(), 12, 64, 48, out), 2);
  EXPECT_EQ(out.size(), 2u * 64 * 48);
}

}  // namespace
}  // namespace nimbus
