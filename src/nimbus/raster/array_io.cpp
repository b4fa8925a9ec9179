#include "nimbus/raster/array_io.h"

#include <gdal_priv.h>
#include <ogr_spatialref.h>

#include <fmt/format.h>

#include "nimbus/core/error.h"
#include "nimbus/raster/atomic_output.h"
#include "nimbus/raster/gdal_handles.h"

namespace nimbus {
namespace {

GDALDataType data_type_from_name(const std::string& name, const std::string& role) {
  const GDALDataType t = GDALGetDataTypeByName(name.c_str());
  if (t == GDT_Unknown || GDALDataTypeIsComplex(t)) {
    throw InputError(fmt::format("{}: data type '{}' is not supported; use uint8, uint16, int16, uint32, int32, "
                                 "float32 or float64",
                                 role, name));
  }
  return t;
}

std::string gdal_message() {
  const char* m = CPLGetLastErrorMsg();
  return m && *m ? m : "no detail from GDAL";
}

}  // namespace

std::string crs_to_wkt(const std::string& crs, const std::string& role) {
  if (crs.empty()) return "";
  const GdalErrorScope quiet;
  OGRSpatialReference srs;
  if (srs.SetFromUserInput(crs.c_str()) != OGRERR_NONE) {
    throw InputError(fmt::format("{}: CRS '{}' is not understood; pass e.g. 'EPSG:32631' or WKT", role, crs));
  }
  char* wkt = nullptr;
  srs.exportToWkt(&wkt);
  std::string out = wkt ? wkt : "";
  CPLFree(wkt);
  return out;
}

namespace {

void write_array_raster_at(const std::string& path, const std::string& role, const void* data,
                           const RasterLayout& layout) {
  ensure_gdal_initialised();
  const GdalErrorScope quiet;
  const GDALDataType type = data_type_from_name(layout.data_type, role);
  if (layout.bands <= 0 || layout.width <= 0 || layout.height <= 0) {
    throw InputError(fmt::format("{}: an array of {} x {} x {} has no pixels", role, layout.bands, layout.height,
                                 layout.width));
  }
  GDALDriver* gtiff = GetGDALDriverManager()->GetDriverByName("GTiff");
  char** options = nullptr;
  options = CSLSetNameValue(options, "TILED", "YES");
  options = CSLSetNameValue(options, "INTERLEAVE", "BAND");
  options = CSLSetNameValue(options, "BIGTIFF", "IF_SAFER");
  CPLErrorReset();
  GdalDatasetPtr ds(gtiff->Create(path.c_str(), layout.width, layout.height, layout.bands, type, options));
  CSLDestroy(options);
  if (ds == nullptr) throw InputError(fmt::format("{} '{}' cannot be created ({})", role, path, gdal_message()));
  if (layout.grid.has_geotransform) {
    double gt[6];
    std::copy(layout.grid.geotransform.begin(), layout.grid.geotransform.end(), gt);
    ds->SetGeoTransform(gt);
  }
  if (!layout.grid.crs_wkt.empty()) ds->SetProjection(layout.grid.crs_wkt.c_str());
  if (layout.nodata) {
    for (int b = 1; b <= layout.bands; ++b) ds->GetRasterBand(b)->SetNoDataValue(*layout.nodata);
  }
  const int pixel_bytes = GDALGetDataTypeSizeBytes(type);
  const CPLErr err = ds->RasterIO(GF_Write, 0, 0, layout.width, layout.height, const_cast<void*>(data), layout.width,
                                  layout.height, type, layout.bands, nullptr, pixel_bytes,
                                  static_cast<GSpacing>(pixel_bytes) * layout.width,
                                  static_cast<GSpacing>(pixel_bytes) * layout.width * layout.height, nullptr);
  ds->FlushCache();
  const bool flushed = CPLGetLastErrorType() < CE_Failure;
  const std::string message = gdal_message();
  ds.reset();
  if (err != CE_None || !flushed) {
    VSIUnlink(path.c_str());
    throw InputError(fmt::format("{} '{}': writing failed ({}); check free space", role, path, message));
  }
}

}  // namespace

void write_array_raster(const std::string& path, const std::string& role, const void* data,
                        const RasterLayout& layout) {
  if (path.rfind("/vsi", 0) == 0) {  // GDAL's virtual file systems (memory, cloud): written as before
    write_array_raster_at(path, role, data, layout);
    return;
  }
  // On disk: all or nothing, never over a special file or a link (see AtomicOutput);
  // an existing file is replaced, as rasterio and numpy's writers do.
  AtomicOutput out(path, role, OutputRules{/*overwrite=*/true, /*streams=*/false});
  try {
    write_array_raster_at(out.temp_path(), role, data, layout);
  } catch (const InputError&) {
    throw InputError(fmt::format("{} '{}' could not be written; check the directory, free space and permissions",
                                 role, path));
  }
  out.commit();
}

RasterLayout read_raster_layout(const std::string& path, const std::string& role) {
  const RasterReader reader(path, role);
  RasterLayout layout;
  layout.bands = reader.band_count();
  layout.width = reader.width();
  layout.height = reader.height();
  layout.grid = reader.grid();
  layout.data_type = reader.data_type_name();
  layout.nodata = reader.nodata_value();
  return layout;
}

void read_array_raster(const std::string& path, const std::string& role, const RasterLayout& layout, void* data) {
  ensure_gdal_initialised();
  const GdalErrorScope quiet;
  const GDALDataType type = data_type_from_name(layout.data_type, role);
  const GdalDatasetPtr ds = adopt_dataset(GDALOpenEx(path.c_str(), GDAL_OF_RASTER | GDAL_OF_READONLY, nullptr,
                                                     nullptr, nullptr));
  if (ds == nullptr) throw InputError(fmt::format("{} '{}' cannot be opened ({})", role, path, gdal_message()));
  const int pixel_bytes = GDALGetDataTypeSizeBytes(type);
  CPLErrorReset();
  const CPLErr err = ds->RasterIO(GF_Read, 0, 0, layout.width, layout.height, data, layout.width, layout.height, type,
                                  layout.bands, nullptr, pixel_bytes, static_cast<GSpacing>(pixel_bytes) * layout.width,
                                  static_cast<GSpacing>(pixel_bytes) * layout.width * layout.height, nullptr);
  const std::string message = gdal_message();
  if (err != CE_None) throw InputError(fmt::format("{} '{}': reading failed ({})", role, path, message));
}

}  // namespace nimbus
