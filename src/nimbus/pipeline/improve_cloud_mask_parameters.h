// improve-cloud-mask as a declared operation: the union of its three ops'
// parameters (renamed as FarmVibes' improve_cloud_mask workflow names them) plus
// its inputs, outputs and run settings. Every front end (CLI, Python, batch, the
// REST service) takes its options from this declaration.
#pragma once

#include <functional>
#include <map>
#include <string>

#include "nimbus/parameters.h"
#include "nimbus/pipeline/improve_cloud_mask.h"

namespace nimbus {

const OperationSpec& improve_cloud_mask_operation();

// Options from parameter values by name (missing or null: the default). Checks
// them against the declaration first; throws ParameterError naming the parameter.
ImproveCloudMaskOptions improve_cloud_mask_options(const Json& values);

// Options shared by every scene of a batch: each scene brings its own s2_raster,
// product_mask and out, so `values` may not hold them (ParameterError naming it).
ImproveCloudMaskOptions batch_options(Json values);

// The values of every declared parameter in `options` (the inverse of
// improve_cloud_mask_options; null where an optional path is not set).
Json improve_cloud_mask_values(const ImproveCloudMaskOptions& options);

// GeoTIFF metadata recording the declared parameters that carry a tag.
std::map<std::string, std::string> parameter_tags(const ImproveCloudMaskOptions& options);

// The output-affecting parameters as one JSON object, input files and models by
// file_identity(path) (embedded models by name): the batch recipe a finished
// scene is checked against.
Json output_recipe(const ImproveCloudMaskOptions& options,
                   const std::function<std::string(const std::string& path)>& file_identity);

}  // namespace nimbus
