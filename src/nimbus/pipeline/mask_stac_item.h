// A STAC Item (1.0.0) describing a written cloud mask, for catalogues and for tools
// that stack items (stackstac, odc-stac): footprint, acquisition time, projection,
// the mask asset with its checksum, eo:cloud_cover and the provenance of the mask.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "nimbus/parameters.h"
#include "nimbus/pipeline/improve_cloud_mask.h"
#include "nimbus/raster/raster_reader.h"

namespace nimbus {

class AreaOfInterest;

// What the item says beyond the options and the report.
struct MaskItemFacts {
  std::string item_path;    // where the item will be (asset hrefs are relative to it)
  std::string mask_path;    // where the mask will be
  std::uint64_t mask_bytes = 0;
  std::string mask_sha256;  // hex
  GridInfo grid;            // of the written mask
  const AreaOfInterest* aoi = nullptr;  // the footprint is clipped to it
  // Acquisition time (ISO 8601) from the input; all empty when unknown.
  std::string datetime, start_datetime, end_datetime;
  std::string input_stac_item;  // the input's STAC item (path, URL or collection#id); empty otherwise
};

// The STAC extension schemas the item declares.
const std::vector<std::string>& mask_item_extensions();

// The item. eo:cloud_cover is report.cloud_cover (null when no pixel was valid).
// Throws InputError when the mask has no CRS (a STAC Item needs a footprint).
Json mask_stac_item(const ImproveCloudMaskOptions& options, const ImproveCloudMaskReport& report,
                    const MaskItemFacts& facts);

}  // namespace nimbus
