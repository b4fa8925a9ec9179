#include "nimbus/inference/onnx_model.h"

#include <algorithm>
#include <string>
#include <vector>

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
  const OnnxModel shadow = load_onnx_bytes("s", default_shadow_model().onnx, "shadow");
  EXPECT_EQ(shadow.contract.channels, 12);
  EXPECT_EQ(shadow.contract.height, 512);
  EXPECT_EQ(shadow.contract.width, 512);
}

TEST(OpenCvBackend, EmbeddedCloudModelRunsAnyChipSize) {
  auto backend = make_backend(std::make_shared<const LoadedModel>(load_onnx_bytes("c", default_cloud_model().onnx, "cloud")),
                              "cloud", {InferenceEngine::OpenCv, 0});
  std::vector<float> input(12 * 64 * 48, 3000.0f);
  std::vector<float> out;
  EXPECT_EQ(backend->run(input.data(), 12, 64, 48, out), 2);
  EXPECT_EQ(out.size(), 2u * 64 * 48);
}

TEST(DefaultModels, EveryEmbeddedModelLoadsByNameAndTheDefaultsAreListed) {
  std::vector<std::string> names;
  for (const EmbeddedModel& m : embedded_models()) {
    names.emplace_back(m.name);
    const auto loaded = load_model(default_model_ref(m), "", "model");
    const OnnxModel& model = loaded->onnx();
    EXPECT_EQ(model.origin, default_model_ref(m));
    EXPECT_EQ(model.contract.channels, 12);
  }
  EXPECT_EQ(std::string(default_cloud_model().name), "nimbus_cloud_v2");
  // v1 stays loadable so masks made with it can be reproduced.
  EXPECT_NE(std::find(names.begin(), names.end(), "nimbus_cloud_v1"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), default_shadow_model().name), names.end());
  try {
    load_model("embedded:nimbus_cloud_v0", "", "cloud model (--cloud-model)");
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    for (const std::string& name : names) {
      EXPECT_NE(std::string(e.what()).find("embedded:" + name), std::string::npos) << e.what();
    }
  }
}

// The ice-cloud fix, through the real backend: the issue-12 thick ice cloud (reflectance
// B01..B12 without B10) is cloud for v2 and was clear for v1.
TEST(DefaultModels, V2FindsTheThickIceCloudV1Rejected) {
  const float ice[12] = {1.13f, 1.13f, 1.03f, 0.98f, 0.97f, 0.96f, 0.95f, 0.93f, 0.93f, 1.55f, 0.23f, 0.26f};
  std::vector<float> input(12 * 4 * 4);
  for (int b = 0; b < 12; ++b) std::fill_n(input.begin() + b * 16, 16, ice[b] * 10000.0f);
  const auto cloud_logit = [&](const char* ref) {
    auto backend = make_backend(load_model(ref, "", "cloud"), "cloud");
    std::vector<float> out;
    backend->run(input.data(), 12, 4, 4, out);
    return out[16] - out[0];  // class 1 minus class 0 at pixel 0
  };
  EXPECT_GT(cloud_logit("embedded:nimbus_cloud_v2"), 5.0f);
  EXPECT_LT(cloud_logit("embedded:nimbus_cloud_v1"), -5.0f);
}

}  // namespace
}  // namespace nimbus
