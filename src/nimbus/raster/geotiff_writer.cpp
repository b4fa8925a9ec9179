#include "nimbus/raster/geotiff_writer.h"

#include <cpl_error.h>
#include <cpl_string.h>
#include <gdal_priv.h>

#include <fmt/format.h>

#include "nimbus/core/error.h"

namespace nimbus {

GeoTiffOptions probability_geotiff_options() {
  GeoTiffOptions o;
  o.type = SampleType::Float32;
  o.nodata = 100.0;
  o.predictor = 3;
  return o;
}

GeoTiffOptions mask_geotiff_options() {
  GeoTiffOptions o;
  o.type = SampleType::UInt8;
  o.nodata = 100.0;  // FarmVibes keeps the probability raster's nodata tag on the mask
  o.predictor = 2;
  return o;
}

void write_single_band_geotiff(const std::string& path, const std::string& role, const GridInfo& grid,
                               const void* data, const GeoTiffOptions& options) {
  ensure_gdal_initialised();
  GDALDriver* driver = GetGDALDriverManager()->GetDriverByName("GTiff");
  if (!driver) throw InternalError("GDAL was built without the GTiff driver");

  const GDALDataType type = options.type == SampleType::UInt8 ? GDT_Byte : GDT_Float32;
  CPLStringList create_options;
  create_options.SetNameValue("TILED", "YES");
  create_options.SetNameValue("BLOCKXSIZE", "256");
  create_options.SetNameValue("BLOCKYSIZE", "256");
  create_options.SetNameValue("COMPRESS", "ZSTD");
  create_options.SetNameValue("ZSTD_LEVEL", std::to_string(options.zstd_level).c_str());
  create_options.SetNameValue("PREDICTOR", std::to_string(options.predictor).c_str());
  create_options.SetNameValue("BIGTIFF", "IF_SAFER");

  const auto fail = [&](const std::string& what) {
    const char* msg = CPLGetLastErrorMsg();
    return InputError(fmt::format("{} '{}': {} ({}); check free disk space and permissions", role, path, what,
                                  (msg && *msg) ? msg : "no detail from GDAL"));
  };

  CPLErrorReset();
  GDALDataset* ds = driver->Create(path.c_str(), grid.width, grid.height, 1, type, create_options.List());
  if (!ds) throw fail("cannot create GeoTIFF");
  if (grid.has_geotransform) {
    std::array<double, 6> gt = grid.geotransform;
    ds->SetGeoTransform(gt.data());
  }
  if (!grid.crs_wkt.empty()) ds->SetProjection(grid.crs_wkt.c_str());
  GDALRasterBand* band = ds->GetRasterBand(1);
  if (options.nodata) band->SetNoDataValue(*options.nodata);
  CPLErr err = band->RasterIO(GF_Write, 0, 0, grid.width, grid.height, const_cast<void*>(data), grid.width,
                              grid.height, type, 0, 0, nullptr);
  if (err == CE_None) ds->FlushCache(true);
  if (err == CE_None && CPLGetLastErrorType() >= CE_Failure) err = CE_Failure;
  GDALClose(ds);
  if (err == CE_None && CPLGetLastErrorType() >= CE_Failure) err = CE_Failure;
  if (err != CE_None) throw fail("writing failed");
}

}  // namespace nimbus
