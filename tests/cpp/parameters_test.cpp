// The declaration of improve-cloud-mask and what is derived from it: options,
// values, the batch recipe and the tags change together with the declaration.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "nimbus/batch/batch.h"
#include "nimbus/parameters.h"
#include "nimbus/pipeline/improve_cloud_mask_parameters.h"

namespace nimbus {
namespace {

// A valid value different from the default, for any declared parameter.
Json other_value(const ParamSpec& p) {
  switch (p.type) {
    case ParamType::Bool: return !p.default_value.get<bool>();
    case ParamType::Int:  // an unset optional integer (nodata_value): its smallest value
      return p.default_value.is_null() ? static_cast<int>(p.min) : p.default_value.get<int>() + 1;
    case ParamType::Float: return p.default_value.get<double>() + 0.125;
    case ParamType::String:
      if (p.choices.empty()) return "other " + p.name;  // free text (aoi, bbox, aoi_crs): checked when run
      return p.choices.back() != p.default_value ? p.choices.back() : p.choices.front();
    case ParamType::Path: return p.name == "cloud_model" || p.name == "shadow_model" ? "embedded:nimbus_cloud_v1"
                                                                                    : "/data/" + p.name + ".tif";
    case ParamType::StringList: return Json::array({"COMPRESS=ZSTD"});
  }
  return nullptr;
}

Json required_values() { return {{"s2_raster", "/data/s2.tif"}, {"out", "/data/mask.tif"}}; }

std::string identity(const std::string& path) { return "file:" + path; }

TEST(Parameters, EveryDeclaredParameterRoundTripsThroughTheOptions) {
  for (const ParamSpec& p : improve_cloud_mask_operation().parameters) {
    Json values = required_values();
    values[p.name] = other_value(p);
    const Json back = improve_cloud_mask_values(improve_cloud_mask_options(values));
    EXPECT_EQ(back.at(p.name), values[p.name]) << p.name;
    EXPECT_EQ(back.size(), improve_cloud_mask_operation().parameters.size());
  }
}

TEST(Parameters, RecipeChangesExactlyWithTheOutputAffectingParameters) {
  const ImproveCloudMaskOptions defaults = improve_cloud_mask_options(required_values());
  const Json base = output_recipe(defaults, identity);
  for (const ParamSpec& p : improve_cloud_mask_operation().parameters) {
    Json values = required_values();
    values[p.name] = other_value(p);
    const Json recipe = output_recipe(improve_cloud_mask_options(values), identity);
    EXPECT_EQ(recipe != base, p.affects_output) << p.name;
    EXPECT_EQ(recipe.contains(p.name), p.affects_output) << p.name;
  }
}

TEST(Parameters, TagsRecordTheTaggedParameters) {
  const ParamSpec* closing = improve_cloud_mask_operation().parameter("closing_size");
  ASSERT_NE(closing, nullptr);
  Json values = required_values();
  values["closing_size"] = 7;
  values["overlap"] = 0.5;
  const auto tags = parameter_tags(improve_cloud_mask_options(values));
  EXPECT_EQ(tags.at(closing->tag), "7");
  EXPECT_EQ(tags.at("NIMBUS_OVERLAP"), "0.5");
  std::set<std::string> declared_tags;
  for (const ParamSpec& p : improve_cloud_mask_operation().parameters)
    if (!p.tag.empty()) declared_tags.insert(p.tag);
  EXPECT_EQ(tags.size(), declared_tags.size());
}

TEST(Parameters, ResolveNamesTheParameterAndKeepsDefaults) {
  const std::vector<ParamSpec> declared{
      ParamSpec{"size", ParamType::Int, 5, "a size", 0.0, 10.0},
      ParamSpec{"mode", ParamType::String, "a", "a mode"}.one_of({"a", "b"}),
      ParamSpec{"input", ParamType::Path, nullptr, "a file"}.mandatory(),
  };
  const Json resolved = resolve_parameters(declared, {{"input", "x.tif"}, {"mode", nullptr}});
  EXPECT_EQ(resolved.at("size"), 5);
  EXPECT_EQ(resolved.at("mode"), "a");
  const auto problem = [&](const Json& values) {
    try {
      resolve_parameters(declared, values);
    } catch (const ParameterError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(problem({{"input", "x"}, {"size", 11}}), "@[size] = 11 is outside [0, 10]");
  EXPECT_EQ(problem({{"input", "x"}, {"size", 1.5}}), "@[size] must be of type int, got 1.5 (number)");
  EXPECT_EQ(problem({{"input", "x"}, {"mode", "c"}}), "@[mode] = 'c' is not one of a, b");
  EXPECT_EQ(problem({{"input", ""}}), "@[input] is an empty path; give a path or leave the parameter out");
  EXPECT_EQ(problem(Json::object()), "@[input] is required; a file");
  EXPECT_EQ(problem({{"input", "x"}, {"sise", 1}}), "@[sise] is unknown; the parameters are size, mode, input");
}

TEST(Parameters, FrontEndsSpellReferences) {
  const std::string text = "output (@[out]) and @[closing_size] = 3, not @[";
  EXPECT_EQ(spell_parameters(text, [](const std::string& n) { return "--" + n; }),
            "output (--out) and --closing_size = 3, not @[");
  EXPECT_EQ(cli_flag_of(*improve_cloud_mask_operation().parameter("closing_size")), "--closing-size");
  EXPECT_EQ(cli_flag_of(*improve_cloud_mask_operation().parameter("creation_options")), "--co");
}

}  // namespace
}  // namespace nimbus
