#include "nimbus/raster/geotiff_writer.h"

#include <cpl_error.h>
#include <cpl_string.h>
#include <gdal_priv.h>

#include <cctype>
#include <cstdlib>
#include <map>
#include <set>

#include <cpl_minixml.h>
#include <fmt/format.h>

#include "nimbus/core/error.h"
#include "nimbus/raster/gdal_handles.h"

namespace nimbus {
namespace {

GDALDriver* cog_driver() {
  ensure_gdal_initialised();
  GDALDriver* driver = GetGDALDriverManager()->GetDriverByName("COG");
  if (!driver) throw InternalError("GDAL was built without the COG driver (GDAL >= 3.1 needed)");
  return driver;
}

}  // namespace

GeoTiffOptions probability_geotiff_options() {
  GeoTiffOptions o;
  o.type = SampleType::Float32;
  o.nodata = 100.0;
  o.floating_point_predictor = true;
  o.overview_resampling = "AVERAGE";
  return o;
}

GeoTiffOptions mask_geotiff_options() {
  GeoTiffOptions o;
  o.type = SampleType::UInt8;
  o.nodata = 100.0;  // FarmVibes keeps the probability raster's nodata tag on the mask
  o.overview_resampling = "NEAREST";
  return o;
}

namespace {

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// GDAL's own check of one KEY=VALUE against the driver's option list (type, value
// list, min/max); returns its complaint, empty when the option is valid.
std::string gdal_complaint(GDALDriver* driver, const std::string& option) {
  struct Collector {
    std::string messages;
  } collector;
  CPLPushErrorHandlerEx(
      [](CPLErr, CPLErrorNum, const char* msg) {
        auto* c = static_cast<Collector*>(CPLGetErrorHandlerUserData());
        if (c->messages.empty() && msg) c->messages = msg;
      },
      &collector);
  const char* const list[] = {option.c_str(), nullptr};
  const int ok = GDALValidateCreationOptions(driver, const_cast<char**>(list));
  CPLPopErrorHandler();
  if (ok) return "";
  std::string m = collector.messages.empty() ? "not accepted by GDAL's COG driver" : collector.messages;
  while (!m.empty() && (m.back() == '.' || m.back() == ' ')) m.pop_back();
  return m;
}

}  // namespace

void validate_creation_options(const std::vector<std::string>& options) {
  const GdalErrorScope quiet;
  GDALDriver* driver = cog_driver();
  const char* list_xml = driver->GetMetadataItem(GDAL_DMD_CREATIONOPTIONLIST);
  std::set<std::string> known;
  if (CPLXMLNode* root = list_xml ? CPLParseXMLString(list_xml) : nullptr) {
    for (const CPLXMLNode* n = root->psChild; n; n = n->psNext) {
      if (n->eType == CXT_Element && EQUAL(n->pszValue, "Option")) {
        if (const char* name = CPLGetXMLValue(n, "name", nullptr)) known.insert(upper(name));
      }
    }
    CPLDestroyXMLNode(root);
  }
  std::map<std::string, std::string> given;
  for (const std::string& o : options) {
    const auto eq = o.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw InputError(fmt::format("@[creation_options] '{}' must be KEY=VALUE, e.g. @[creation_options] COMPRESS=DEFLATE", o));
    }
    const std::string key = upper(o.substr(0, eq));
    const std::string value = o.substr(eq + 1);
    if (!known.empty() && !known.count(key)) {
      throw InputError(fmt::format("@[creation_options] {}: not a COG creation option; see `gdalinfo --format COG` "
                                   "(e.g. COMPRESS, LEVEL, PREDICTOR, BLOCKSIZE, OVERVIEWS)",
                                   key));
    }
    if (value.empty()) throw InputError(fmt::format("@[creation_options] {}= has no value; give KEY=VALUE", key));
    if (const std::string complaint = gdal_complaint(driver, key + "=" + value); !complaint.empty()) {
      throw InputError(fmt::format("@[creation_options] {}={}: {}; see `gdalinfo --format COG` for the accepted values", key, value,
                                   complaint));
    }
    given[key] = upper(value);
  }
  // Nimbus' own limits: what GDAL accepts but would exhaust memory, change the grid or lose data.
  for (const auto& [key, value] : given) {
    const std::string shown = fmt::format("@[creation_options] {}={}", key, value);
    if (key == "BLOCKSIZE") {
      char* end = nullptr;
      const long v = std::strtol(value.c_str(), &end, 10);
      if (*end != '\0' || v < 128 || v > 4096 || v % 16 != 0) {
        throw InputError(fmt::format("{}: the tile size must be a multiple of 16 from 128 to 4096 pixels (default "
                                     "256); larger tiles need gigabytes per tile",
                                     shown));
      }
    } else if (key == "LEVEL" || key == "QUALITY" || key == "OVERVIEW_QUALITY") {
      char* end = nullptr;
      const long v = std::strtol(value.c_str(), &end, 10);
      const long hi = key == "LEVEL" ? 22 : 100;
      if (*end != '\0' || v < 1 || v > hi) {
        throw InputError(fmt::format("{}: use a whole number from 1 to {}", shown, hi));
      }
    } else if (key == "NUM_THREADS") {
      char* end = nullptr;
      const long v = std::strtol(value.c_str(), &end, 10);
      if (value != "ALL_CPUS" && (*end != '\0' || v < 1 || v > 1024)) {
        throw InputError(fmt::format("{}: use ALL_CPUS or a number of threads from 1 to 1024", shown));
      }
    } else if (key == "RESAMPLING" || key == "OVERVIEW_RESAMPLING") {
      static const std::set<std::string> methods{"NEAREST", "BILINEAR", "CUBIC", "CUBICSPLINE", "LANCZOS",
                                                 "AVERAGE", "RMS",      "MODE",  "GAUSS"};
      if (!methods.count(value)) {
        throw InputError(fmt::format("{}: unknown resampling; use NEAREST, AVERAGE, BILINEAR, CUBIC, CUBICSPLINE, "
                                     "LANCZOS, RMS, MODE or GAUSS",
                                     shown));
      }
    } else if (key == "COMPRESS" && (value == "JPEG" || value == "WEBP")) {
      throw InputError(fmt::format("{}: lossy compression would change mask and probability values; use a lossless "
                                   "one (ZSTD, DEFLATE, LZW, LZMA)",
                                   shown));
    } else if (key == "OVERVIEW_COMPRESS" && (value == "JPEG" || value == "WEBP")) {
      throw InputError(fmt::format("{}: JPEG/WEBP cannot hold the float32 probability rasters and would blur the "
                                   "mask's overviews; use a lossless one (ZSTD, DEFLATE, LZW, LZMA)",
                                   shown));
    } else if ((key == "PREDICTOR" || key == "OVERVIEW_PREDICTOR") && (value == "FLOATING_POINT" || value == "3")) {
      throw InputError(fmt::format("{}: the floating-point predictor fails on the 8-bit mask; leave PREDICTOR to "
                                   "Nimbus (2 for the mask, 3 for the probabilities) or use YES / NO",
                                   shown));
    } else if (key == "MAX_Z_ERROR" && std::strtod(value.c_str(), nullptr) != 0.0) {
      throw InputError(fmt::format("{}: LERC with a non-zero error is lossy and would change the values; leave it 0",
                                   shown));
    } else if ((key == "TILING_SCHEME" && value != "CUSTOM") || key == "TARGET_SRS" || key == "RES" ||
               key == "EXTENT" || key == "ZOOM_LEVEL" || key == "ZOOM_LEVEL_STRATEGY" || key == "ALIGNED_LEVELS" ||
               key == "ADD_ALPHA" || key == "WARP_RESAMPLING") {
      throw InputError(fmt::format("{}: this option reprojects the raster, so it would no longer be on the scene's "
                                   "grid; reproject the finished mask with gdalwarp instead",
                                   shown));
    }
  }
}

void describe_mask_band(GeoTiffOptions& options, std::uint8_t nodata_value, bool nodata_pixels_are_masked) {
  options.band_description =
      nodata_pixels_are_masked
          ? fmt::format("cloud mask: 0 clear, 1 cloud or shadow (also where the input has no data, as in FarmVibes); "
                        "nodata tag {}",
                        nodata_value)
          : fmt::format("cloud mask: 0 clear, 1 cloud or shadow, {} no data", nodata_value);
  // A TIFF colour map holds no alpha; GDAL shows the nodata entry transparent.
  options.color_table.assign(256, {0, 0, 0, 255});
  options.color_table[kMaskClear] = {0, 0, 0, 255};
  options.color_table[kMaskCloudOrShadow] = {255, 0, 255, 255};  // magenta, as in the preview
  options.color_table[nodata_value] = {128, 128, 128, 255};
}

std::string mask_category_names_aux_xml(std::uint8_t nodata_value) {
  std::string xml = "<PAMDataset>\n  <PAMRasterBand band=\"1\">\n    <CategoryNames>\n";
  for (int v = 0; v <= nodata_value; ++v) {
    const char* name = v == kMaskClear ? "clear" : v == kMaskCloudOrShadow ? "cloud or shadow" : v == nodata_value ? "nodata" : "";
    xml += *name ? fmt::format("      <Category>{}</Category>\n", name) : "      <Category></Category>\n";
  }
  return xml + "    </CategoryNames>\n  </PAMRasterBand>\n</PAMDataset>\n";
}

void write_single_band_geotiff(const std::string& path, const std::string& role, const GridInfo& grid,
                               const void* data, const GeoTiffOptions& options) {
  const GdalErrorScope quiet;
  GDALDriver* cog = cog_driver();
  GDALDriver* mem = GetGDALDriverManager()->GetDriverByName("MEM");
  const GDALDataType type = options.type == SampleType::UInt8 ? GDT_Byte : GDT_Float32;

  // A MEM dataset over the caller's buffer: no copy before the COG translation.
  const GdalDatasetPtr src(mem->Create("", grid.width, grid.height, 0, type, nullptr));
  if (!src) throw InternalError(fmt::format("{} '{}': GDAL's MEM driver refused a {}x{} raster", role, path, grid.width,
                                            grid.height));
  CPLStringList band_options;
  band_options.SetNameValue("DATAPOINTER", CPLSPrintf("%p", data));
  src->AddBand(type, band_options.List());
  if (grid.has_geotransform) {
    std::array<double, 6> gt = grid.geotransform;
    src->SetGeoTransform(gt.data());
  }
  if (!grid.crs_wkt.empty()) src->SetProjection(grid.crs_wkt.c_str());
  GDALRasterBand* band = src->GetRasterBand(1);
  if (options.nodata) band->SetNoDataValue(*options.nodata);
  if (!options.band_description.empty()) band->SetDescription(options.band_description.c_str());
  if (!options.unit.empty()) band->SetUnitType(options.unit.c_str());
  if (!options.color_table.empty()) {
    GDALColorTable table;
    for (std::size_t i = 0; i < options.color_table.size(); ++i) {
      const auto& c = options.color_table[i];
      const GDALColorEntry entry{c[0], c[1], c[2], c[3]};
      table.SetColorEntry(static_cast<int>(i), &entry);
    }
    band->SetColorTable(&table);
  }
  for (const auto& [k, v] : options.metadata) src->SetMetadataItem(k.c_str(), v.c_str());

  CPLStringList create_options;
  create_options.SetNameValue("COMPRESS", "ZSTD");
  create_options.SetNameValue("LEVEL", "9");
  create_options.SetNameValue("PREDICTOR", options.floating_point_predictor ? "FLOATING_POINT" : "STANDARD");
  create_options.SetNameValue("BLOCKSIZE", "256");
  create_options.SetNameValue("OVERVIEWS", "AUTO");
  create_options.SetNameValue("RESAMPLING", options.overview_resampling.c_str());
  create_options.SetNameValue("BIGTIFF", "IF_SAFER");
  create_options.SetNameValue("NUM_THREADS", "ALL_CPUS");
  for (const std::string& o : options.creation_options) {
    const auto eq = o.find('=');
    create_options.SetNameValue(o.substr(0, eq).c_str(), o.substr(eq + 1).c_str());
  }

  // GDAL's progress callback is where a write is cancelled (returns FALSE to stop).
  struct CancelState {
    const CancelCheck* cancel;
    bool fired;
  } cancel_state{&options.cancel, false};
  const GDALProgressFunc progress = [](double, const char*, void* data) -> int {
    auto* state = static_cast<CancelState*>(data);
    state->fired = state->fired || (*state->cancel)();
    return state->fired ? FALSE : TRUE;
  };
  CPLErrorReset();
  GdalDatasetPtr out(cog->CreateCopy(path.c_str(), src.get(), FALSE, create_options.List(),
                                     options.cancel ? progress : nullptr, options.cancel ? &cancel_state : nullptr));
  bool ok = out != nullptr && CPLGetLastErrorType() < CE_Failure;
  out.reset();  // closing writes the rest of the file
  ok = ok && CPLGetLastErrorType() < CE_Failure;
  if (cancel_state.fired) throw Cancelled();
  if (!ok) {
    const char* msg = CPLGetLastErrorMsg();
    throw InputError(fmt::format("{} '{}': writing the GeoTIFF failed ({}); check free disk space, permissions and "
                                 "@[creation_options] options",
                                 role, path, (msg && *msg) ? msg : "no detail from GDAL"));
  }
}

}  // namespace nimbus
