// Outputs of a run as the client reads them: STAC items (spec 4.5, 4.8).
#pragma once

#include <string>

#include "nimbus/server/run_record.h"

namespace nimbus::server {

// The output item of one sink file: the product fields, time range and geometry of
// `scene_item` (the run's first input item, as FarmVibes' merge op copies s2_raster's),
// a new id, the data type's own fields (a cloud mask: bands {"cloud": 0} and categories
// ["Clear", "Cloud"]) and one asset {href: absolute path, type: image/tiff}.
OJson output_item(const OJson& scene_item, const std::string& data_type, const std::string& asset_id,
                  const std::string& href);

}  // namespace nimbus::server
