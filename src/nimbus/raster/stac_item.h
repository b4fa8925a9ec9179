// Sentinel-2 L2A STAC Items (a local JSON file or an http(s) URL) as a scene: the
// band assets (COGs, read in place through /vsicurl/), the processing baseline and
// BOA offset from the item's properties, and the SCL asset for the product mask,
// stacked by sentinel2_scene.h exactly as a SAFE product's bands are.
//
// Two asset conventions are recognised: Earth Search v1 (coastal, blue, green, red,
// rededge1..3, nir, nir08, nir09, swir16, swir22, scl; older items B01..B12) and
// Planetary Computer (B01..B12 without B10, B8A, SCL). Remote asset hrefs get the
// query string in the environment variable NIMBUS_STAC_TOKEN appended when it is
// set (Planetary Computer's SAS token).
#pragma once

#include <string>

#include "nimbus/raster/sentinel2_scene.h"

namespace nimbus {

// The environment variable whose value (a URL query string, e.g. a SAS token) is
// appended to every http(s) asset href.
inline constexpr const char* kStacTokenVariable = "NIMBUS_STAC_TOKEN";

// True for an http(s) URL that does not name a raster file (.tif, .jp2, ...), a GDAL
// network path ending in .json, or a local regular file ending in .json or starting with '{'.
bool looks_like_stac_item(const std::string& path);

// Reads and parses the item and resolves its assets; throws InputError naming the
// item, the asset or URL and the fix (malformed item, L1C item, missing band asset,
// an asset that cannot be read, a server that does not answer).
Sentinel2BandFiles find_stac_item_files(const std::string& item);

// find_stac_item_files, then stack_sentinel2_bands.
Sentinel2Scene open_stac_item(const std::string& item);

}  // namespace nimbus
