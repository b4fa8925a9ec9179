#include "nimbus/raster/geotiff_writer.h"

#include <cpl_error.h>
#include <cpl_string.h>
#include <gdal_priv.h>

#include <fmt/format.h>

#include "nimbus/core/error.h"

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

void validate_creation_options(const std::vector<std::string>& options) {
  const char* allowed = cog_driver()->GetMetadataItem(GDAL_DMD_CREATIONOPTIONLIST);
  for (const std::string& o : options) {
    const auto eq = o.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw InputError(fmt::format("creation option '{}' must be KEY=VALUE, e.g. --co COMPRESS=DEFLATE", o));
    }
    const std::string key = o.substr(0, eq);
    if (allowed && std::string(allowed).find("name='" + key + "'") == std::string::npos) {
      throw InputError(fmt::format("creation option '{}' is not a COG option; see `gdalinfo --format COG` "
                                   "(e.g. COMPRESS, LEVEL, PREDICTOR, BLOCKSIZE, OVERVIEWS)",
                                   key));
    }
  }
}

void write_single_band_geotiff(const std::string& path, const std::string& role, const GridInfo& grid,
                               const void* data, const GeoTiffOptions& options) {
  GDALDriver* cog = cog_driver();
  GDALDriver* mem = GetGDALDriverManager()->GetDriverByName("MEM");
  const GDALDataType type = options.type == SampleType::UInt8 ? GDT_Byte : GDT_Float32;

  // A MEM dataset over the caller's buffer: no copy before the COG translation.
  GDALDataset* src = mem->Create("", grid.width, grid.height, 0, type, nullptr);
  CPLStringList band_options;
  band_options.SetNameValue("DATAPOINTER", CPLSPrintf("%p", data));
  src->AddBand(type, band_options.List());
  if (grid.has_geotransform) {
    std::array<double, 6> gt = grid.geotransform;
    src->SetGeoTransform(gt.data());
  }
  if (!grid.crs_wkt.empty()) src->SetProjection(grid.crs_wkt.c_str());
  if (options.nodata) src->GetRasterBand(1)->SetNoDataValue(*options.nodata);
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

  CPLErrorReset();
  GDALDataset* out = cog->CreateCopy(path.c_str(), src, FALSE, create_options.List(), nullptr, nullptr);
  bool ok = out != nullptr && CPLGetLastErrorType() < CE_Failure;
  if (out) GDALClose(out);
  ok = ok && CPLGetLastErrorType() < CE_Failure;
  GDALClose(src);
  if (!ok) {
    const char* msg = CPLGetLastErrorMsg();
    throw InputError(fmt::format("{} '{}': writing the GeoTIFF failed ({}); check free disk space, permissions and "
                                 "--co options",
                                 role, path, (msg && *msg) ? msg : "no detail from GDAL"));
  }
}

}  // namespace nimbus
