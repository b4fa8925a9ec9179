#include <gtest/gtest.h>

#include "nimbus/ops/registry.h"
#include "nimbus/workflow/cache.h"
#include "nimbus/workflow/workflow_graph.h"
#include "nimbus/workflow/workflow_spec.h"

namespace nimbus {
namespace {

TEST(PythonStr, MatchesPythonForParameterValues) {
  EXPECT_EQ(python_str(Json(0.25)), "0.25");
  EXPECT_EQ(python_str(Json(0.3)), "0.3");
  EXPECT_EQ(python_str(Json(1.0)), "1.0");
  EXPECT_EQ(python_str(Json(1e-05)), "1e-05");
  EXPECT_EQ(python_str(Json(512)), "512");
  EXPECT_EQ(python_str(Json(true)), "True");
  EXPECT_EQ(python_str(Json(nullptr)), "None");
  EXPECT_EQ(python_str(Json("cloud_model2_cpu.onnx")), "cloud_model2_cpu.onnx");
}

TEST(CacheKey, ComputeCloudProbTextFollowsTheSpecExample) {
  const OpDefinition* op = find_op("compute_cloud_prob");
  ASSERT_NE(op, nullptr);
  Json params = Json::object();
  for (const auto& p : op->parameters) params[p.name] = p.default_value;
  // The spec's example runs FarmVibes' model; Nimbus' default is its embedded one.
  params["model_path"] = "cloud_model2_cpu.onnx";
  EXPECT_EQ(cache_key_text(*op, {{"sentinel_raster", "RID"}}, params),
            "sentinel_rasterRIDparametersdownsampling1model_pathcloud_model2_cpu.onnxoverlap0.25window_size5121");
}

TEST(CacheKey, EmbeddedDefaultModelIsKeyedApartFromFarmVibesFile) {
  for (const char* name : {"compute_cloud_prob", "compute_shadow_prob"}) {
    const OpDefinition* op = find_op(name);
    ASSERT_NE(op, nullptr);
    Json params = Json::object();
    for (const auto& p : op->parameters) params[p.name] = p.default_value;
    EXPECT_EQ(params["model_path"].get<std::string>().rfind("embedded:", 0), 0u) << name;
    const std::string embedded = cache_key(*op, {{"sentinel_raster", "X"}}, params);
    params["model_path"] = std::string(name) == "compute_cloud_prob" ? "cloud_model2_cpu.onnx" : "shadow.onnx";
    EXPECT_NE(cache_key(*op, {{"sentinel_raster", "X"}}, params), embedded) << name;
  }
}

TEST(CacheKey, MergeSortsPortsAndParameters) {
  const OpDefinition* op = find_op("merge_cloud_masks_simple");
  Json params = Json::object();
  for (const auto& p : op->parameters) params[p.name] = p.default_value;
  EXPECT_EQ(cache_key_text(*op, {{"product_mask", "P"}, {"cloud_probability", "C"}, {"shadow_probability", "S"}},
                           params),
            "cloud_probabilityCproduct_maskPshadow_probabilitySparametersclosing_size5cloud_prob_threshold0.3"
            "min_area0shadow_prob_threshold0.21");
}

TEST(CacheKey, NonDependencyParametersDoNotChangeTheKey) {
  const OpDefinition* op = find_op("compute_shadow_prob");
  Json params = Json::object();
  for (const auto& p : op->parameters) params[p.name] = p.default_value;
  const std::string k1 = cache_key(*op, {{"sentinel_raster", "X"}}, params);
  params["in_memory"] = true;
  params["root_dir"] = "/elsewhere";
  EXPECT_EQ(cache_key(*op, {{"sentinel_raster", "X"}}, params), k1);
  params["overlap"] = 0.5;
  EXPECT_NE(cache_key(*op, {{"sentinel_raster", "X"}}, params), k1);
}

TEST(YamlScalars, ConvertLikePyYaml) {
  EXPECT_TRUE(yaml_scalar_to_json("null").is_null());
  EXPECT_TRUE(yaml_scalar_to_json("~").is_null());
  EXPECT_EQ(yaml_scalar_to_json("true"), Json(true));
  EXPECT_EQ(yaml_scalar_to_json("512"), Json(512));
  EXPECT_EQ(yaml_scalar_to_json(".25"), Json(0.25));
  EXPECT_EQ(yaml_scalar_to_json("0.4"), Json(0.4));
  EXPECT_EQ(yaml_scalar_to_json("cloud.onnx"), Json("cloud.onnx"));
}

TEST(ParameterReference, AnchoredGreedyAndNonEmpty) {
  EXPECT_EQ(parameter_reference(Json("@from(cloud_thr)")), "cloud_thr");
  EXPECT_EQ(parameter_reference(Json("@from(x)trailing")), "x");
  EXPECT_EQ(parameter_reference(Json("x@from(y)")), "");
  EXPECT_EQ(parameter_reference(Json(3)), "");
  EXPECT_THROW(parameter_reference(Json("@from()")), InputError);
}

TEST(DataTypes, FollowFarmVibesHierarchy) {
  EXPECT_TRUE(data_type_is_a("Sentinel2Raster", "Raster"));
  EXPECT_TRUE(data_type_is_a("Sentinel2CloudMask", "CloudRaster"));
  EXPECT_FALSE(data_type_is_a("Sentinel2CloudMask", "Sentinel2CloudProbability"));
  EXPECT_FALSE(data_type_is_a("Sentinel2CloudProbability", "Sentinel2CloudMask"));
}

}  // namespace
}  // namespace nimbus
