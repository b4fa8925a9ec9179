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

void run_warp(const std::string& dst, GDALDatasetH src, const std::vector<std::string>& args, const std::string& what,
              const std::string& product) {
  CPLStringList argv;
  for (const auto& a : args) argv.AddString(a.c_str());
  GDALWarpAppOptions* opts = GDALWarpAppOptionsNew(argv.List(), nullptr);
  int usage_error = 0;
  const GdalDatasetPtr out = adopt_dataset(GDALWarp(dst.c_str(), nullptr, 1, &src, opts, &usage_error));
  GDALWarpAppOptionsFree(opts);
  if (!out) {
    throw InputError(fmt::format("Sentinel-2 product '{}': resampling {} to the 10 m grid failed ({})", product, what,
                                 CPLGetLastErrorMsg()));
  }
}

std::vector<std::string> grid_args(const GridInfo& g) {
  const double x0 = g.geotransform[0], y0 = g.geotransform[3];
  const double x1 = x0 + g.geotransform[1] * g.width, y1 = y0 + g.geotransform[5] * g.height;
  return {"-te", fmt::format("{:.10f}", std::min(x0, x1)), fmt::format("{:.10f}", std::min(y0, y1)),
          fmt::format("{:.10f}", std::max(x0, x1)), fmt::format("{:.10f}", std::max(y0, y1)), "-ts",
          std::to_string(g.width), std::to_string(g.height)};
}

// A single-band file reprojected onto the 10 m grid, as a VRT in /vsimem owned by `files`.
std::string onto_grid(const std::string& file, const GridInfo& grid, const char* resampling, bool nodata_zero,
                      const std::string& what, const std::string& product, VsimemFiles& files) {
  const GdalDatasetPtr src = adopt_dataset(GDALOpen(file.c_str(), GA_ReadOnly));
  if (!src) throw InputError(fmt::format("Sentinel-2 product '{}': {} ('{}') cannot be opened", product, what, file));
  std::vector<std::string> args{"-of", "VRT", "-r", resampling, "-et", "0"};  // exact transformer
  if (nodata_zero) args.insert(args.end(), {"-srcnodata", "0", "-dstnodata", "0"});
  for (const auto& a : grid_args(grid)) args.push_back(a);
  const std::string dst = files.make(what + ".vrt");
  run_warp(dst, GDALDataset::ToHandle(src.get()), args, what, product);
  return dst;
}

// The processing baseline in a product name (..._N0400_R122_... -> "04.00"), or empty.
std::string baseline_from_name(const std::string& path) {
  static const std::regex baseline_re(R"(_N(\d\d)(\d\d)_)");
  std::smatch m;
  if (!std::regex_search(path, m, baseline_re)) return {};
  return m[1].str() + "." + m[2].str();
}

// The BOA offsets by ESA band id and the processing baseline. A metadata file that
// cannot be read (empty, truncated) leaves the baseline empty.
std::map<int, double> boa_offsets(const std::string& mtd, std::string& baseline) {
  std::map<int, double> offsets;
  CPLXMLNode* root = CPLParseXMLFile(mtd.c_str());
  if (!root) return offsets;
  CPLStripXMLNamespace(root, nullptr, TRUE);
  const CPLXMLNode* info = CPLSearchXMLNode(root, "=Product_Info");
  if (info) baseline = CPLGetXMLValue(info, "PROCESSING_BASELINE", "");
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

// Writes a uint8 mask (non-zero = cloud) computed from `source` pixels to /vsimem, owned by `files`.
// Only the first `max_bands` bands of the source are read (a damaged file may declare thousands).
template <typename Classify>
std::string classify_to_mask(const std::string& source, const GridInfo& grid, const std::string& stem,
                             int max_bands, VsimemFiles& files, Classify classify) {
  GdalDatasetPtr src = adopt_dataset(GDALOpen(source.c_str(), GA_ReadOnly));
  if (!src) {
    throw InputError(fmt::format("the product mask source '{}' cannot be opened ({}); the product may be damaged, "
                                 "re-download it",
                                 source, CPLGetLastErrorMsg()));
  }
  const int bands = std::min(src->GetRasterCount(), max_bands);
  std::vector<std::vector<std::uint16_t>> planes(bands, std::vector<std::uint16_t>(std::size_t(grid.width) * grid.height));
  for (int b = 0; b < bands; ++b) {
    if (src->GetRasterBand(b + 1)->RasterIO(GF_Read, 0, 0, grid.width, grid.height, planes[b].data(), grid.width,
                                            grid.height, GDT_UInt16, 0, 0, nullptr) != CE_None) {
      throw InputError(fmt::format("reading the product mask source '{}' failed ({})", source, CPLGetLastErrorMsg()));
    }
  }
  src.reset();
  std::vector<std::uint8_t> mask(std::size_t(grid.width) * grid.height);
  for (std::size_t i = 0; i < mask.size(); ++i) mask[i] = classify(planes, i) ? 1 : 0;
  const std::string path = files.make(stem + ".tif");
  CPLErrorReset();
  GdalDatasetPtr out(GetGDALDriverManager()->GetDriverByName("GTiff")->Create(path.c_str(), grid.width, grid.height,
                                                                                1, GDT_Byte, nullptr));
  if (!out) {
    throw InputError(fmt::format("the product mask from '{}' cannot be created in memory ({}); free some memory",
                                 source, CPLGetLastErrorMsg()));
  }
  std::array<double, 6> gt = grid.geotransform;
  out->SetGeoTransform(gt.data());
  out->SetProjection(grid.crs_wkt.c_str());
  out->GetRasterBand(1)->SetNoDataValue(100);
  if (out->GetRasterBand(1)->RasterIO(GF_Write, 0, 0, grid.width, grid.height, mask.data(), grid.width, grid.height,
                                      GDT_Byte, 0, 0, nullptr) != CE_None) {
    throw InputError(fmt::format("writing the product mask from '{}' in memory failed ({}); free some memory", source,
                                 CPLGetLastErrorMsg()));
  }
  return path;
}

}  // namespace

const std::vector<std::string>& farmvibes_band_order() {
  static const std::vector<std::string> order{"B01", "B02", "B03", "B04", "B05", "B06",
                                              "B07", "B08", "B8A", "B09", "B11", "B12"};
  return order;
}

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

SafeScene open_sentinel2_safe(const std::string& path) {
  ensure_gdal_initialised();
  const GdalErrorScope quiet;
  const NetworkTimeoutScope timeouts;
  SafeScene scene;
  scene.product = path;
  const std::string root = product_root(path);
  std::vector<std::string> files;
  list_files(root, files);
  const std::string mtd = ends_with_one_of(files, {"/MTD_MSIL2A.xml"});
  if (mtd.empty()) {
    throw InputError(fmt::format("'{}' holds no MTD_MSIL2A.xml: Nimbus reads Sentinel-2 Level-2A SAFE products "
                                 "(L1C needs atmospheric correction first, e.g. with Sen2Cor)",
                                 path));
  }
  std::map<int, double> offsets = boa_offsets(mtd, scene.processing_baseline);
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
  std::map<std::string, std::string> band_file;
  for (const std::string& band : farmvibes_band_order()) {
    const std::string f = ends_with_one_of(files, {"_" + band + "_10m.jp2", "_" + band + "_20m.jp2",
                                                   "_" + band + "_60m.jp2", "_" + band + ".jp2"});
    if (f.empty()) {
      throw InputError(fmt::format("Sentinel-2 product '{}' has no image file for band {} (looked for "
                                   "GRANULE/*/IMG_DATA/R*m/*_{}_*m.jp2); the download may be incomplete",
                                   path, band, band));
    }
    band_file[band] = f;
  }
  // The 10 m grid of B02, as FarmVibes stacks onto it.
  GridInfo grid;
  {
    RasterReader b02(band_file["B02"], fmt::format("Sentinel-2 product '{}' band B02", path));
    grid = b02.grid();
  }
  // The product mask is classified from whole planes on this grid (up to 3 uint16
  // bands and the result): check that it fits before anything is allocated.
  require_memory(static_cast<std::uint64_t>(grid.width) * static_cast<std::uint64_t>(grid.height) * 8,
                 fmt::format("Sentinel-2 product '{}' (B02 is {}x{} pixels)", path, grid.width, grid.height));
  std::vector<std::string> sources;
  for (const std::string& band : farmvibes_band_order()) {
    sources.push_back(onto_grid(band_file[band], grid, "bilinear", true, band, path, scene.files));
    auto it = offsets.find(esa_band_id().at(band));
    scene.band_offsets.push_back(it != offsets.end() ? it->second : 0.0);
  }
  CPLStringList argv;
  argv.AddString("-separate");
  argv.AddString("-srcnodata");
  argv.AddString("0");
  argv.AddString("-vrtnodata");
  argv.AddString("0");
  GDALBuildVRTOptions* opts = GDALBuildVRTOptionsNew(argv.List(), nullptr);
  std::vector<const char*> names;
  for (const auto& s : sources) names.push_back(s.c_str());
  scene.stack_path = scene.files.make("stack.vrt");
  int usage_error = 0;
  GdalDatasetPtr stack = adopt_dataset(GDALBuildVRT(scene.stack_path.c_str(), static_cast<int>(names.size()), nullptr,
                                                    names.data(), opts, &usage_error));
  GDALBuildVRTOptionsFree(opts);
  if (!stack) {
    throw InputError(fmt::format("Sentinel-2 product '{}': stacking the bands failed ({})", path, CPLGetLastErrorMsg()));
  }
  for (std::size_t i = 0; i < farmvibes_band_order().size(); ++i) {
    GDALRasterBandH band = GDALGetRasterBand(GDALDataset::ToHandle(stack.get()), static_cast<int>(i) + 1);
    GDALSetDescription(band, farmvibes_band_order()[i].c_str());
    if (scene.band_offsets[i] != 0.0) {
      GDALSetMetadataItem(band, kBandOffsetKey, fmt::format("{}", scene.band_offsets[i]).c_str(), nullptr);
    }
  }
  stack.reset();  // written out to /vsimem

  // The product's own cloud mask, best source first.
  const std::string classi = ends_with_one_of(files, {"/MSK_CLASSI_B00.jp2"});
  const std::string gml = ends_with_one_of(files, {"/MSK_CLOUDS_B00.gml"});
  const std::string scl = ends_with_one_of(files, {"_SCL_20m.jp2", "_SCL_60m.jp2"});
  if (!classi.empty()) {
    // Bands: 1 opaque clouds, 2 cirrus, 3 snow; clouds are the first two.
    const std::string on_grid = onto_grid(classi, grid, "near", false, "MSK_CLASSI", path, scene.files);
    scene.product_mask_path = classify_to_mask(on_grid, grid, "pm_classi", 2, scene.files,
                                               [](const auto& p, std::size_t i) {
      return p[0][i] != 0 || (p.size() > 1 && p[1][i] != 0);
    });
    scene.product_mask_source = "MSK_CLASSI";
  } else if (GdalDatasetPtr vec = gml.empty() ? nullptr
                                              : adopt_dataset(GDALOpenEx(gml.c_str(), GDAL_OF_VECTOR, nullptr, nullptr,
                                                                         nullptr))) {
    const std::string empty = classify_to_mask(band_file["B02"], grid, "pm_gml", 1, scene.files,
                                               [](const auto&, std::size_t) { return false; });
    GdalDatasetPtr dst = adopt_dataset(GDALOpen(empty.c_str(), GA_Update));
    if (!dst) {
      throw InputError(fmt::format("the product mask for '{}' cannot be reopened in memory ({}); free some memory", gml,
                                   CPLGetLastErrorMsg()));
    }
    CPLStringList args;
    for (const char* a : {"-burn", "1"}) args.AddString(a);
    GDALRasterizeOptions* ropts = GDALRasterizeOptionsNew(args.List(), nullptr);
    // GDALRasterize into an existing dataset returns that same handle (not a new one).
    const GDALDatasetH done = GDALRasterize(nullptr, GDALDataset::ToHandle(dst.get()),
                                            GDALDataset::ToHandle(vec.get()), ropts, &usage_error);
    GDALRasterizeOptionsFree(ropts);
    if (!done) throw InputError(fmt::format("rasterising '{}' failed ({})", gml, CPLGetLastErrorMsg()));
    scene.product_mask_path = empty;
    scene.product_mask_source = "MSK_CLOUDS GML";
  } else if (!scl.empty()) {
    const std::string on_grid = onto_grid(scl, grid, "near", false, "SCL", path, scene.files);
    // Scene classification: 3 cloud shadow, 8 cloud medium, 9 cloud high, 10 thin cirrus.
    scene.product_mask_path = classify_to_mask(on_grid, grid, "pm_scl", 1, scene.files,
                                               [](const auto& p, std::size_t i) {
      const int c = p[0][i];
      return c == 3 || c == 8 || c == 9 || c == 10;
    });
    scene.product_mask_source = "SCL";
  } else {
    scene.product_mask_source = "none";
  }
  return scene;
}

void write_safe_stack(const SafeScene& scene, const std::string& path, const std::string& role) {
  const GdalErrorScope quiet;
  const GdalDatasetPtr src = adopt_dataset(GDALOpen(scene.stack_path.c_str(), GA_ReadOnly));
  if (!src) {
    throw InputError(fmt::format("{} '{}': the stack of '{}' cannot be reopened ({})", role, path, scene.product,
                                 CPLGetLastErrorMsg()));
  }
  CPLStringList argv;
  for (const char* a : {"-of", "COG", "-co", "COMPRESS=ZSTD", "-co", "PREDICTOR=STANDARD", "-co", "BLOCKSIZE=256",
                        "-co", "BIGTIFF=IF_SAFER", "-co", "NUM_THREADS=ALL_CPUS"})
    argv.AddString(a);
  GDALTranslateOptions* opts = GDALTranslateOptionsNew(argv.List(), nullptr);
  int usage_error = 0;
  CPLErrorReset();
  GdalDatasetPtr out = adopt_dataset(GDALTranslate(path.c_str(), GDALDataset::ToHandle(src.get()), opts, &usage_error));
  GDALTranslateOptionsFree(opts);
  const bool ok = out != nullptr && CPLGetLastErrorType() < CE_Failure;
  out.reset();
  if (!ok) {
    throw InputError(fmt::format("{} '{}': writing the stack failed ({}); check disk space", role, path,
                                 CPLGetLastErrorMsg()));
  }
}

}  // namespace nimbus
