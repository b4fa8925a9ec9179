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
#include <vector>

#include <nlohmann/json.hpp>

#include "nimbus/raster/sentinel2_scene.h"

namespace nimbus {

// The environment variable whose value (a URL query string, e.g. a SAS token) is
// appended to every http(s) asset href.
inline constexpr const char* kStacTokenVariable = "NIMBUS_STAC_TOKEN";

// An item is named by its path or URL, or, inside an ItemCollection (saved search
// results), as "<collection path or URL>#<item id>"; relative asset hrefs resolve
// against the item's (or the collection's) location.

// True for an http(s) URL that does not name a raster file (.tif, .jp2, ...), a GDAL
// network path ending in .json, a local regular file ending in .json or starting with
// '{', or a collection item "file#id".
bool looks_like_stac_item(const std::string& path);

// "<collection>#<id>": the name of the item `id` inside the ItemCollection `collection`.
std::string collection_item_locator(const std::string& collection, const std::string& id);

// The item's JSON (not yet checked to be an item), read from its file or URL, or picked
// out of its collection by id. Throws InputError when it cannot be read or parsed.
nlohmann::json read_stac_item(const std::string& item);

// Whether `location` (a file, GDAL path or http(s) URL) holds a STAC ItemCollection
// (a JSON object with "type": "FeatureCollection"). Throws InputError when it cannot be read.
bool is_stac_item_collection(const std::string& location);

struct StacCollectionScene {
  std::string item_id;  // the feature's "id"
  std::string locator;  // collection_item_locator(location, item_id)
};

// The items of a STAC ItemCollection (a FeatureCollection of items; a file, GDAL path or
// http(s) URL) in order. Throws InputError naming the location when it is not JSON, not
// an ItemCollection, empty, or holds a feature without an id or two with the same id.
std::vector<StacCollectionScene> read_stac_item_collection(const std::string& location);

// Reads and parses the item and resolves its assets; throws InputError naming the
// item, the asset or URL and the fix (malformed item, L1C item, missing band asset,
// an asset that cannot be read, a server that does not answer). Without
// probe_remote_assets, remote assets are not asked whether they exist (a cheap check
// of the item alone, e.g. of every scene before a batch starts).
Sentinel2BandFiles find_stac_item_files(const std::string& item, bool probe_remote_assets = true);

// find_stac_item_files, then stack_sentinel2_bands.
Sentinel2Scene open_stac_item(const std::string& item);

}  // namespace nimbus
