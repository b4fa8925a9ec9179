#include "nimbus/raster/stac_item.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>

#include <cpl_conv.h>
#include <cpl_error.h>
#include <cpl_http.h>
#include <cpl_string.h>
#include <cpl_vsi.h>
#include <cpl_vsi_error.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "nimbus/core/error.h"
#include "nimbus/core/input_files.h"
#include "nimbus/raster/gdal_handles.h"
#include "nimbus/raster/raster_reader.h"

namespace nimbus {
namespace fs = std::filesystem;
using json = nlohmann::json;
namespace {

// A STAC item is a few kilobytes; anything this large is not one.
constexpr GIntBig kMaxItemBytes = GIntBig{16} << 20;
// Saved search results hold a few hundred items of a few kilobytes each.
constexpr GIntBig kMaxCollectionBytes = GIntBig{256} << 20;

constexpr const char* kNetworkFix =
    "check the URL and that the server answers (timeouts: GDAL_HTTP_CONNECTTIMEOUT, GDAL_HTTP_LOW_SPEED_TIME)";

bool is_http_url(const std::string& s) { return s.rfind("http://", 0) == 0 || s.rfind("https://", 0) == 0; }

bool has_raster_extension(const std::string& path) {
  std::string p = path.substr(0, path.find('?'));
  const std::string ext = fs::path(p).extension().string();
  for (const char* raster_ext : {".tif", ".tiff", ".TIF", ".TIFF", ".vrt", ".jp2", ".img", ".zip", ".xml"}) {
    if (ext == raster_ext) return true;
  }
  return false;
}

std::string gdal_error_detail() {
  std::string error = CPLGetLastErrorMsg();
  if (error.empty()) error = VSIGetLastErrorMsg();
  return error.empty() ? std::string("no detail from GDAL") : error;
}

// A STAC document's text (`what` names it in errors, e.g. "STAC item (@[s2_raster])"), from a
// local file, a GDAL path, or an http(s) URL (without its #fragment). A URL is fetched with
// one GET through GDAL's HTTP client (its timeouts and retries of transient errors apply):
// /vsicurl/ would list the folder and HEAD the URL first, which STAC APIs may refuse, and
// would take a chunked body of unknown length for an empty file.
std::string read_document_text(const std::string& location, const std::string& what, GIntBig max_bytes,
                               const char* too_large_fix) {
  const NetworkTimeoutScope timeouts;
  CPLErrorReset();
  VSIErrorReset();
  if (is_http_url(location)) {
    const std::string url = location.substr(0, location.find('#'));
    CPLHTTPResult* result = CPLHTTPFetch(url.c_str(), nullptr);
    std::string error;
    if (!result) {
      error = gdal_error_detail();
    } else if (result->nStatus != 0 || (result->pszErrBuf && *result->pszErrBuf)) {
      error = result->pszErrBuf && *result->pszErrBuf ? result->pszErrBuf : gdal_error_detail();
    } else if (result->nDataLen > max_bytes) {
      CPLHTTPDestroyResult(result);
      throw InputError(fmt::format("{} '{}' is larger than {} MB; {}", what, location, max_bytes >> 20, too_large_fix));
    }
    std::string text;
    if (result && error.empty() && result->pabyData) {
      text.assign(reinterpret_cast<const char*>(result->pabyData), static_cast<std::size_t>(result->nDataLen));
    }
    if (result) CPLHTTPDestroyResult(result);
    if (!error.empty()) {
      throw InputError(fmt::format("{} '{}' cannot be read ({}); {}", what, location, error, kNetworkFix));
    }
    return text;
  }
  if (!is_network_path(location)) require_not_special_file(location, what);
  VSILFILE* file = VSIFOpenExL(location.c_str(), "rb", TRUE);
  std::string text;
  bool failed = file == nullptr;
  if (file) {
    char buffer[65536];
    while (!failed) {
      const std::size_t got = VSIFReadL(buffer, 1, sizeof buffer, file);
      text.append(buffer, got);
      if (got < sizeof buffer) {
        failed = CPLGetLastErrorType() >= CE_Failure;  // a short read: the end, or a transfer error
        break;
      }
      if (text.size() > static_cast<std::size_t>(max_bytes)) {
        VSIFCloseL(file);
        throw InputError(fmt::format("{} '{}' is larger than {} MB; {}", what, location, max_bytes >> 20,
                                     too_large_fix));
      }
    }
    VSIFCloseL(file);
  }
  if (failed) {
    throw InputError(fmt::format("{} '{}' cannot be read ({}); {}", what, location, gdal_error_detail(),
                                 is_network_path(location) ? kNetworkFix : "check the path"));
  }
  return text;
}

std::string read_item_text(const std::string& item) {
  return read_document_text(item, "STAC item (@[s2_raster])", kMaxItemBytes,
                            "no STAC Item is that large: pass one item's JSON or URL");
}

std::pair<std::string, std::string> split_locator(const std::string& item);

// Where relative hrefs are resolved: the item's (or its collection's) folder, or URL up to its last '/'.
std::string item_base(const std::string& located_item) {
  const std::string item = split_locator(located_item).first;
  if (is_http_url(item) || is_network_path(item)) {
    const std::string no_query = item.substr(0, item.find_first_of("?#"));
    return no_query.substr(0, no_query.rfind('/') + 1);
  }
  const fs::path parent = fs::absolute(fs::path(item)).parent_path();
  return parent.string() + "/";
}

// "../a/./b" under "http://h/x/y/" -> "http://h/x/a/b" (RFC 3986 dot segments, enough for STAC hrefs).
std::string join_relative(const std::string& base, const std::string& href) {
  std::string prefix, path = base + href;
  const std::size_t scheme = path.find("://");
  if (scheme != std::string::npos) {
    const std::size_t root = path.find('/', scheme + 3);
    prefix = path.substr(0, root);
    path = root == std::string::npos ? "/" : path.substr(root);
  }
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (start <= path.size()) {
    const std::size_t end = std::min(path.find('/', start), path.size());
    const std::string part = path.substr(start, end - start);
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (part != "." && !(part.empty() && end < path.size())) {
      parts.push_back(part);
    }
    start = end + 1;
  }
  std::string out = prefix;
  for (const auto& p : parts) out += "/" + p;
  return out;
}

// An asset href as a GDAL path, with the token appended to remote URLs.
std::string asset_gdal_path(const std::string& item, const std::string& href) {
  std::string url = href;
  if (url.rfind("file://", 0) == 0) url = url.substr(7);
  if (url.rfind("s3://", 0) == 0) return "/vsis3/" + url.substr(5);
  const bool absolute = is_http_url(url) || url.rfind("/", 0) == 0;
  if (!absolute) url = join_relative(item_base(item), url);
  if (!is_http_url(url)) return url;  // a local file (or a GDAL path)
  if (const char* token = std::getenv(kStacTokenVariable); token && *token) {
    std::string query = token;
    if (query.front() == '?') query.erase(0, 1);
    url += (url.find('?') == std::string::npos ? "?" : "&") + query;
  }
  // The URL as a /vsicurl? option (escaped): its folder is taken as empty, so GDAL neither
  // lists it nor probes ~30 sidecar names (.aux.xml, .msk, .ovr, ...) per band, which a
  // server that refuses listings (signed blob storage) would answer one by one.
  char* escaped = CPLEscapeString(url.c_str(), -1, CPLES_URL);
  std::string path = std::string("/vsicurl?empty_dir=yes&url=") + escaped;
  CPLFree(escaped);
  return path;
}

// The URL in a /vsicurl path made by asset_gdal_path, for messages.
std::string url_of(const std::string& gdal_path) {
  const std::string marker = "&url=";
  const std::size_t at = gdal_path.find(marker);
  if (gdal_path.rfind("/vsicurl?", 0) != 0 || at == std::string::npos) return gdal_path;
  char* unescaped = CPLUnescapeString(gdal_path.c_str() + at + marker.size(), nullptr, CPLES_URL);
  std::string url = unescaped;
  CPLFree(unescaped);
  return url;
}

// The asset keys of each FarmVibes band, Earth Search v1 names first.
const std::map<std::string, std::vector<std::string>>& band_asset_keys() {
  static const std::map<std::string, std::vector<std::string>> keys{
      {"B01", {"coastal", "B01"}},  {"B02", {"blue", "B02"}},     {"B03", {"green", "B03"}},
      {"B04", {"red", "B04"}},      {"B05", {"rededge1", "B05"}}, {"B06", {"rededge2", "B06"}},
      {"B07", {"rededge3", "B07"}}, {"B08", {"nir", "B08"}},      {"B8A", {"nir08", "B8A"}},
      {"B09", {"nir09", "B09"}},    {"B11", {"swir16", "B11"}},   {"B12", {"swir22", "B12"}}};
  return keys;
}

std::string text_property(const json& properties, const char* key) {
  const auto it = properties.find(key);
  if (it == properties.end() || it->is_null()) return {};
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number()) return fmt::format("{:05.2f}", it->get<double>());
  return {};
}

// `text` with the token (a secret) replaced by the variable's name, for messages.
std::string without_token(std::string text) {
  const char* token = std::getenv(kStacTokenVariable);
  if (!token || !*token) return text;
  std::string secret = token;
  if (secret.front() == '?') secret.erase(0, 1);
  if (secret.empty()) return text;
  const std::string shown = fmt::format("${}", kStacTokenVariable);
  for (std::size_t at = text.find(secret); at != std::string::npos; at = text.find(secret, at + shown.size())) {
    text.replace(at, secret.size(), shown);
  }
  return text;
}

std::string baseline_in(const std::string& name) {
  static const std::regex baseline_re(R"(_N(\d\d)(\d\d)_)");
  std::smatch m;
  if (!std::regex_search(name, m, baseline_re)) return {};
  return m[1].str() + "." + m[2].str();
}

// "coll.json#ID" -> {"coll.json", "ID"}; anything else -> {item, ""}. A local path is split
// only where the part before a '#' is a file (a '#' may be part of a file name).
std::pair<std::string, std::string> split_locator(const std::string& item) {
  const std::size_t first = item.find('#');
  if (first == std::string::npos) return {item, ""};
  if (is_http_url(item)) return {item.substr(0, first), item.substr(first + 1)};
  std::error_code ec;
  if (fs::exists(item, ec)) return {item, ""};
  for (std::size_t at = first; at != std::string::npos; at = item.find('#', at + 1)) {
    if (fs::is_regular_file(item.substr(0, at), ec)) return {item.substr(0, at), item.substr(at + 1)};
  }
  return {item, ""};
}

json parse_json(const std::string& text, const std::string& what, const std::string& location, const char* fix) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw InputError(fmt::format("{} '{}' is not valid JSON ({}); {}", what, location, e.what(), fix));
  }
}

std::string member_text(const json& object, const char* key) {
  if (!object.is_object()) return {};
  const auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

bool looks_like_stac_item(const std::string& path) {
  if (is_http_url(path)) return !has_raster_extension(path.substr(0, path.find('#')));
  if (!split_locator(path).second.empty()) return true;
  const std::string ext = fs::path(path.substr(0, path.find('?'))).extension().string();
  if (is_network_path(path) || path.rfind("/vsi", 0) == 0) return ext == ".json";
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return false;
  if (ext == ".json" || ext == ".geojson") return true;
  std::ifstream in(path, std::ios::binary);
  char c = 0;
  while (in.get(c)) {
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    return c == '{';
  }
  return false;
}

Sentinel2BandFiles find_stac_item_files(const std::string& item, bool probe_remote_assets) {
  ensure_gdal_initialised();
  const GdalErrorScope quiet;
  const NetworkTimeoutScope timeouts;
  const json doc = read_stac_item(item);
  Sentinel2BandFiles files;
  files.product = item;
  files.label = fmt::format("STAC item '{}'", item);
  files.stac_item = item;
  // A member's text, empty when absent or not a string (a damaged item must not throw json's errors).
  const auto text_member = [](const json& object, const char* key) {
    const auto it = object.find(key);
    return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  const std::string type = doc.is_object() ? text_member(doc, "type") : std::string();
  if (type == "FeatureCollection") {
    throw InputError(
        fmt::format("'{}' is a STAC ItemCollection, not an Item; pass one item of it to @[s2_raster] (as "
                    "'COLLECTION#ITEM_ID'), or give the collection to nimbus batch as its manifest",
                    item));
  }
  if (type != "Feature" || !doc.contains("assets") || !doc["assets"].is_object()) {
    throw InputError(
        fmt::format("STAC item (@[s2_raster]) '{}' is not a STAC Item (a JSON object with \"type\": "
                    "\"Feature\" and \"assets\"); pass a Sentinel-2 L2A item",
                    item));
  }
  const json& assets = doc["assets"];
  const json properties =
      doc.contains("properties") && doc["properties"].is_object() ? doc["properties"] : json::object();
  const std::string id = text_member(doc, "id");
  const std::string collection = text_member(doc, "collection");
  const std::string product_type = text_property(properties, "s2:product_type");
  const bool level1c = product_type.find("1C") != std::string::npos || id.find("MSIL1C") != std::string::npos ||
                       collection.find("l1c") != std::string::npos;
  const auto asset_of = [&assets](const std::vector<std::string>& keys) -> std::pair<std::string, const json*> {
    for (const auto& key : keys) {
      const auto it = assets.find(key);
      if (it != assets.end()) return {key, &*it};
    }
    return {"", nullptr};
  };
  const auto scl = asset_of({"scl", "SCL"});
  if (level1c || !scl.second) {
    throw InputError(
        fmt::format("STAC item '{}' is {}: Nimbus reads Sentinel-2 Level-2A items (pass the item from "
                    "the sentinel-2-l2a collection; L1C needs atmospheric correction first)",
                    item, level1c ? "a Level-1C item" : "not a Level-2A item (it has no SCL asset)"));
  }
  const auto href_of = [&](const std::string& band, const std::pair<std::string, const json*>& asset) {
    if (!asset.second->is_object() || !asset.second->contains("href") || !(*asset.second)["href"].is_string() ||
        (*asset.second)["href"].get<std::string>().empty()) {
      throw InputError(
          fmt::format("STAC item '{}': asset '{}' ({}) has no \"href\"; the item is damaged, fetch it "
                      "again from the catalogue",
                      item, asset.first, band));
    }
    return asset_gdal_path(item, (*asset.second)["href"].get<std::string>());
  };
  std::vector<std::string> asset_keys;
  for (const std::string& band : farmvibes_band_order()) {
    const auto keys = band_asset_keys().at(band);
    const auto asset = asset_of(keys);
    if (!asset.second) {
      throw InputError(
          fmt::format("STAC item '{}' has no asset for band {} (looked for '{}' or '{}'); Nimbus needs "
                      "all 12 bands B01..B12 (no B10): pass a complete Sentinel-2 L2A item",
                      item, band, keys[0], keys[1]));
    }
    files.bands.push_back(href_of(band, asset));
    asset_keys.push_back(asset.first);
  }
  files.scl = href_of("scene classification", scl);
  asset_keys.push_back(scl.first);

  // Processing baseline and BOA offset: Earth Search says whether it already applied
  // the offset; otherwise (Planetary Computer) baselines from 04.00 carry -1000, as in SAFE products.
  files.processing_baseline = text_property(properties, "s2:processing_baseline");
  if (files.processing_baseline.empty()) {
    files.processing_baseline = baseline_in(text_property(properties, "s2:product_uri"));
  }
  if (files.processing_baseline.empty()) files.processing_baseline = baseline_in(id);
  double offset = 0.0;
  const auto applied = properties.find("earthsearch:boa_offset_applied");
  if (applied != properties.end() && applied->is_boolean() && applied->get<bool>()) {
    offset = 0.0;
  } else if (files.processing_baseline.empty()) {
    throw InputError(
        fmt::format("STAC item '{}' has no s2:processing_baseline property (nor a baseline _Nxxxx_ in "
                    "s2:product_uri or its id), so the BOA offset is unknown; use the catalogue's "
                    "complete item",
                    item));
  } else {
    offset = files.processing_baseline >= "04.00" ? -1000.0 : 0.0;
  }
  files.band_offsets.assign(files.bands.size(), offset);
  files.datetime = text_member(properties, "datetime");
  files.start_datetime = text_member(properties, "start_datetime");
  files.end_datetime = text_member(properties, "end_datetime");

  // Every asset answers before any pixel is read: a 404 or a dead server is named here.
  std::vector<std::string> paths = files.bands;
  paths.push_back(files.scl);
  for (std::size_t i = 0; i < paths.size(); ++i) {
    if (is_network_path(paths[i]) && !probe_remote_assets) continue;
    if (!is_network_path(paths[i])) {
      std::error_code ec;
      if (paths[i].rfind("/vsi", 0) != 0 && !fs::exists(paths[i], ec)) {
        throw InputError(
            fmt::format("STAC item '{}': asset '{}' file '{}' does not exist; keep the band files "
                        "next to the item as its hrefs say, or fix the hrefs",
                        item, asset_keys[i], paths[i]));
      }
      continue;
    }
    CPLErrorReset();
    VSIErrorReset();
    VSIStatBufL st;
    if (VSIStatExL(paths[i].c_str(), &st, VSI_STAT_EXISTS_FLAG | VSI_STAT_SET_ERROR_FLAG) != 0) {
      const std::string detail = gdal_error_detail();
      const char* token = std::getenv(kStacTokenVariable);
      const std::string url = url_of(paths[i]);
      // Planetary Computer's storage, or any server refusing access: most likely an unsigned URL.
      const bool pc =
          url.find(".blob.core.windows.net") != std::string::npos || detail.find("403") != std::string::npos;
      throw InputError(
          fmt::format("STAC item '{}': asset '{}' ('{}') cannot be read ({}); {}", item, asset_keys[i],
                      without_token(url), without_token(detail),
                      pc && !(token && *token)
                          ? fmt::format("signed assets (Planetary Computer) need a SAS token: set {} to the token's "
                                        "query string",
                                        kStacTokenVariable)
                          : std::string(kNetworkFix) + "; the asset may have moved: fetch the item again"));
    }
  }
  return files;
}

std::string collection_item_locator(const std::string& collection, const std::string& id) {
  return collection + "#" + id;
}

json read_stac_item(const std::string& item) {
  ensure_gdal_initialised();
  const GdalErrorScope quiet;
  const std::pair<std::string, std::string> located = split_locator(item);
  const std::string& document = located.first;
  const std::string& feature_id = located.second;
  if (feature_id.empty()) {
    return parse_json(read_item_text(item), "STAC item (@[s2_raster])", item,
                      "pass a STAC Item (e.g. saved from the catalogue's /collections/sentinel-2-l2a/items/ID)");
  }
  const std::string what = "STAC ItemCollection (@[s2_raster])";
  const json doc = parse_json(
      read_document_text(document, what, kMaxCollectionBytes, "split the search results into smaller collections"),
      what, document, "pass the saved search results (a FeatureCollection) or one item");
  if (member_text(doc, "type") == "Feature" && member_text(doc, "id") == feature_id) return doc;
  const json* found = nullptr;
  if (member_text(doc, "type") == "FeatureCollection" && doc.contains("features") && doc["features"].is_array()) {
    for (const json& feature : doc["features"]) {
      if (member_text(feature, "id") != feature_id) continue;
      if (found) {
        throw InputError(fmt::format("{} '{}' holds several items with the id '{}'; keep one of them", what,
                                     document, feature_id));
      }
      found = &feature;
    }
  }
  if (!found) {
    throw InputError(fmt::format("{} '{}' holds no item with the id '{}' (from '{}'); check the id after '#'", what,
                                 document, feature_id, item));
  }
  return *found;
}

bool is_stac_item_collection(const std::string& location) {
  ensure_gdal_initialised();
  const GdalErrorScope quiet;
  const std::string text =
      read_document_text(location, "STAC document", kMaxCollectionBytes, "split it into smaller collections");
  const json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  return member_text(doc, "type") == "FeatureCollection";
}

std::vector<StacCollectionScene> read_stac_item_collection(const std::string& location) {
  ensure_gdal_initialised();
  const GdalErrorScope quiet;
  const std::string what = "manifest (STAC ItemCollection)";
  const char* kinds =
      "a manifest is a CSV file (header s2_raster,product_mask,id) or a STAC ItemCollection (saved search "
      "results: a JSON object with \"type\": \"FeatureCollection\" and \"features\")";
  const json doc = parse_json(
      read_document_text(location, what, kMaxCollectionBytes, "split the search results into smaller collections"),
      what, location, kinds);
  const std::string type = member_text(doc, "type");
  if (type == "Feature") {
    throw InputError(fmt::format("manifest '{}' is a STAC Item, not an ItemCollection; pass it to improve-cloud-mask, "
                                 "or list it in a CSV manifest (column s2_raster)",
                                 location));
  }
  if (type != "FeatureCollection" || !doc.contains("features") || !doc["features"].is_array()) {
    throw InputError(fmt::format("manifest '{}' is JSON but not a STAC ItemCollection; {}", location, kinds));
  }
  const json& features = doc["features"];
  if (features.empty()) {
    throw InputError(fmt::format("manifest '{}' is an ItemCollection without items (\"features\" is empty): the "
                                 "search found no scene; widen the search (area, dates, cloud cover)",
                                 location));
  }
  std::vector<StacCollectionScene> scenes;
  std::map<std::string, std::size_t> seen;
  for (std::size_t i = 0; i < features.size(); ++i) {
    const json& feature = features[i];
    const std::string id = member_text(feature, "id");
    if (member_text(feature, "type") != "Feature" || id.empty()) {
      throw InputError(fmt::format("manifest '{}': feature {} is not a STAC Item (an object with \"type\": "
                                   "\"Feature\" and a non-empty string \"id\"); save the search results again",
                                   location, i + 1));
    }
    const auto inserted = seen.emplace(id, i);
    if (!inserted.second) {
      throw InputError(fmt::format("manifest '{}': features {} and {} both have the id '{}'; two scenes would write "
                                   "one output: remove the duplicate (e.g. results of overlapping searches)",
                                   location, inserted.first->second + 1, i + 1, id));
    }
    scenes.push_back({id, collection_item_locator(location, id)});
  }
  return scenes;
}

Sentinel2Scene open_stac_item(const std::string& item) { return stack_sentinel2_bands(find_stac_item_files(item)); }

}  // namespace nimbus
