#include "nimbus/raster/sentinel2_safe.h"

#include <cmath>
#include <filesystem>
#include <map>
#include <regex>
#include <set>

#include <cpl_conv.h>
#include <cpl_minixml.h>
#include <cpl_string.h>
#include <cpl_vsi.h>
#include <gdal_priv.h>
#include <gdal_utils.h>

#include <fmt/format.h>
#include "nimbus/core/error.h"
#include "nimbus/core/input_files.h"
#include "nimbus/core/log.h"
#include "nimbus/raster/gdal_handles.h"
#include "nimbus/raster/raster_reader.h"

namespace nimbus {
namespace fs = std::filesystem;
namespace {

// Whether a SAFE directory entry can hold files Nimbus reads: the product folder
// (*.SAFE), GRANULE and each granule, IMG_DATA with its R10m/R20m/R60m, QI_DATA.
bool leads_to_product_files(const std::string& name, const std::string& parent, int depth) {
  static const std::set<std::string> folders{"GRANULE", "IMG_DATA", "QI_DATA", "R10m", "R20m", "R60m"};
  if (folders.count(name)) return true;
  if (parent == "GRANULE") return true;
  return depth == 0 && name.size() > 5 && name.compare(name.size() - 5, 5, ".SAFE") == 0;
}

// Lists the files of a SAFE product under a GDAL path (works inside /vsizip/ too).
// Only the folders that can hold product files are opened, and nothing is stat'ed:
// archives answer each directory listing and stat by scanning every entry, so a
// walk of the whole tree would cost entries^2 (minutes for 200 000 entries).
void list_files(const std::string& dir, std::vector<std::string>& out, int depth = 0, const std::string& name = "") {
  if (depth > 6) return;
  char** entries = VSIReadDir(dir.c_str());
  if (!entries) return;
  std::vector<std::string> names;
  for (int i = 0; entries[i]; ++i) names.emplace_back(entries[i]);
  CSLDestroy(entries);
  // An archive of one product folder not named *.SAFE (e.g. renamed): look inside it.
  const bool single_folder = depth == 0 && names.size() == 1 && names[0].find('.') == std::string::npos;
  for (const std::string& entry : names) {
    if (entry == "." || entry == "..") continue;
    const std::string full = dir + "/" + entry;
    if (leads_to_product_files(entry, name, depth) || single_folder) {
      list_files(full, out, depth + 1, entry);
    } else {
      out.push_back(full);
    }
  }
}

std::string ends_with_one_of(const std::vector<std::string>& files, const std::vector<std::string>& suffixes) {
  for (const std::string& suffix : suffixes) {
    for (const std::string& f : files) {
      if (f.size() >= suffix.size() && f.compare(f.size() - suffix.size(), suffix.size(), suffix) == 0) return f;
    }
  }
  return {};
}

// The product root as a GDAL path (a directory, or /vsizip/... for archives).
std::string product_root(const std::string& path) {
  if (fs::path(path).filename() == "MTD_MSIL2A.xml") {
    return fs::path(path).parent_path().string();
  }
  if (fs::is_regular_file(path) && fs::path(path).extension() == ".zip") return "/vsizip/" + path;
  return path;
}

// The processing baseline in a product name (..._N0400_R122_... -> "04.00"), or empty.
std::string baseline_from_name(const std::string& path) {
  static const std::regex baseline_re(R"(_N(\d\d)(\d\d)_)");
  std::smatch m;
  if (!std::regex_search(path, m, baseline_re)) return {};
  return m[1].str() + "." + m[2].str();
}

// The BOA offsets by ESA band id, the processing baseline and the sensing start time. A
// metadata file that cannot be read (empty, truncated) leaves the baseline empty.
std::map<int, double> boa_offsets(const std::string& mtd, std::string& baseline, std::string& start_time) {
  std::map<int, double> offsets;
  CPLXMLNode* root = CPLParseXMLFile(mtd.c_str());
  if (!root) return offsets;
  CPLStripXMLNamespace(root, nullptr, TRUE);
  const CPLXMLNode* info = CPLSearchXMLNode(root, "=Product_Info");
  if (info) baseline = CPLGetXMLValue(info, "PROCESSING_BASELINE", "");
  if (info) start_time = CPLGetXMLValue(info, "PRODUCT_START_TIME", "");
  if (const CPLXMLNode* list = CPLSearchXMLNode(root, "=BOA_ADD_OFFSET_VALUES_LIST")) {
    for (const CPLXMLNode* n = list->psChild; n; n = n->psNext) {
      if (n->eType != CXT_Element || !EQUAL(n->pszValue, "BOA_ADD_OFFSET")) continue;
      const std::string text = CPLGetXMLValue(n, nullptr, "0");
      const double offset = CPLAtof(text.c_str());
      if (!std::isfinite(offset) || std::abs(offset) > 10000.0) {
        CPLDestroyXMLNode(root);
        throw InputError(fmt::format("metadata '{}': BOA_ADD_OFFSET '{}' is not a DN offset (Sentinel-2 uses -1000); "
                                     "the file is damaged, re-download the product",
                                     mtd, text));
      }
      offsets[atoi(CPLGetXMLValue(n, "band_id", "-1"))] = offset;
    }
  }
  CPLDestroyXMLNode(root);
  return offsets;
}

// ESA band_id of each stacked band (B01=0 .. B8A=8, B09=9, B10=10, B11=11, B12=12).
const std::map<std::string, int>& esa_band_id() {
  static const std::map<std::string, int> ids{{"B01", 0}, {"B02", 1}, {"B03", 2}, {"B04", 3},  {"B05", 4},
                                              {"B06", 5}, {"B07", 6}, {"B08", 7}, {"B8A", 8},  {"B09", 9},
                                              {"B11", 11}, {"B12", 12}};
  return ids;
}

}  // namespace

bool looks_like_sentinel2_safe(const std::string& path) {
  ensure_gdal_initialised();
  const GdalErrorScope quiet;
  const NetworkTimeoutScope timeouts;
  if (path.rfind("/vsi", 0) == 0) {  // GDAL virtual paths: /vsizip/, /vsicurl/, ...
    VSIStatBufL st;
    if (fs::path(path).filename() == "MTD_MSIL2A.xml") return true;
    // A URL of a raster file is not a product folder: no request for a metadata file.
    const std::string ext = fs::path(path).extension().string();
    for (const char* raster_ext : {".tif", ".tiff", ".TIF", ".TIFF", ".vrt", ".jp2", ".img"}) {
      if (ext == raster_ext) return false;
    }
    require_network_path_answers(path, "Sentinel-2 raster (@[s2_raster])");
    return VSIStatL((path + "/MTD_MSIL2A.xml").c_str(), &st) == 0;
  }
  const fs::path p(path);
  if (fs::is_directory(p)) return p.extension() == ".SAFE" || fs::is_regular_file(p / "MTD_MSIL2A.xml");
  if (p.filename() == "MTD_MSIL2A.xml") return true;
  if (p.extension() == ".zip" && fs::is_regular_file(p)) {
    std::vector<std::string> files;
    list_files("/vsizip/" + path, files);
    return !ends_with_one_of(files, {"/MTD_MSIL2A.xml"}).empty();
  }
  return false;
}

Sentinel2BandFiles find_sentinel2_safe_files(const std::string& path) {
  ensure_gdal_initialised();
  const GdalErrorScope quiet;
  const NetworkTimeoutScope timeouts;
  Sentinel2BandFiles scene;
  scene.product = path;
  scene.label = fmt::format("Sentinel-2 product '{}'", path);
  const std::string root = product_root(path);
  std::vector<std::string> files;
  list_files(root, files);
  const std::string mtd = ends_with_one_of(files, {"/MTD_MSIL2A.xml"});
  if (mtd.empty()) {
    throw InputError(fmt::format("'{}' holds no MTD_MSIL2A.xml: Nimbus reads Sentinel-2 Level-2A SAFE products "
                                 "(L1C needs atmospheric correction first, e.g. with Sen2Cor)",
                                 path));
  }
  std::map<int, double> offsets = boa_offsets(mtd, scene.processing_baseline, scene.datetime);
  // From baseline 04.00 on, DN carry a -1000 offset; losing it (a truncated or empty
  // MTD_MSIL2A.xml) would shift every band and silently change the mask.
  if (scene.processing_baseline.empty()) {
    const std::string from_name = baseline_from_name(path);
    if (from_name.empty()) {
      throw InputError(fmt::format("Sentinel-2 product '{}': its metadata '{}' cannot be read (empty or truncated) "
                                   "and the product name carries no processing baseline (_Nxxxx_), so the BOA offset "
                                   "is unknown; re-download the product",
                                   path, mtd));
    }
    scene.processing_baseline = from_name;
    if (from_name >= "04.00") {
      for (const auto& [band, id] : esa_band_id()) offsets[id] = -1000.0;
    }
    logger()->warn("Sentinel-2 product '{}': metadata '{}' cannot be read; using processing baseline {} from the "
                 "product name (BOA offset {})",
                 path, mtd, from_name, from_name >= "04.00" ? "-1000" : "0");
  } else if (scene.processing_baseline >= "04.00" && offsets.empty()) {
    throw InputError(fmt::format("Sentinel-2 product '{}': metadata '{}' declares processing baseline {} but no "
                                 "BOA_ADD_OFFSET values (the file may be truncated); re-download the product",
                                 path, mtd, scene.processing_baseline));
  }

  // Band files, highest resolution first (compact SAFE naming: T31TDH_..._B02_10m.jp2).
  for (const std::string& band : farmvibes_band_order()) {
    const std::string f = ends_with_one_of(files, {"_" + band + "_10m.jp2", "_" + band + "_20m.jp2",
                                                   "_" + band + "_60m.jp2", "_" + band + ".jp2"});
    if (f.empty()) {
      throw InputError(fmt::format("Sentinel-2 product '{}' has no image file for band {} (looked for "
                                   "GRANULE/*/IMG_DATA/R*m/*_{}_*m.jp2); the download may be incomplete",
                                   path, band, band));
    }
    scene.bands.push_back(f);
    auto it = offsets.find(esa_band_id().at(band));
    scene.band_offsets.push_back(it != offsets.end() ? it->second : 0.0);
  }
  // The product's own cloud mask sources; stack_sentinel2_bands uses the best one present.
  scene.msk_classi = ends_with_one_of(files, {"/MSK_CLASSI_B00.jp2"});
  scene.msk_clouds_gml = ends_with_one_of(files, {"/MSK_CLOUDS_B00.gml"});
  scene.scl = ends_with_one_of(files, {"_SCL_20m.jp2", "_SCL_60m.jp2"});
  return scene;
}

Sentinel2Scene open_sentinel2_safe(const std::string& path) {
  return stack_sentinel2_bands(find_sentinel2_safe_files(path));
}

}  // namespace nimbus
