#include "nimbus/raster/sentinel2_scene.h"

#include <algorithm>
#include <array>
#include <cstdint>

#include <cpl_conv.h>
#include <cpl_string.h>
#include <gdal_priv.h>
#include <gdal_utils.h>
#include <ogr_spatialref.h>

#include <fmt/format.h>
#include "nimbus/core/error.h"
#include "nimbus/core/input_files.h"
#include "nimbus/raster/gdal_handles.h"
#include "nimbus/raster/raster_reader.h"
#include "nimbus/raster/sentinel2_safe.h"
#include "nimbus/raster/stac_item.h"

namespace nimbus {
namespace {

void run_warp(const std::string& dst, GDALDatasetH src, const std::vector<std::string>& args, const std::string& what,
              const std::string& label) {
  CPLStringList argv;
  for (const auto& a : args) argv.AddString(a.c_str());
  GDALWarpAppOptions* opts = GDALWarpAppOptionsNew(argv.List(), nullptr);
  int usage_error = 0;
  const GdalDatasetPtr out = adopt_dataset(GDALWarp(dst.c_str(), nullptr, 1, &src, opts, &usage_error));
  GDALWarpAppOptionsFree(opts);
  if (!out) {
    throw InputError(fmt::format("{}: resampling {} to the 10 m grid failed ({})", label, what,
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

// gdalwarp's VRTs warp whole 512 x 128 blocks of the 10 m grid. A chip read warps every
// block it touches, and each block's source window (with the bilinear kernel's margin)
// reaches into the next tile of the band file whenever a block edge falls on a tile edge,
// which 512-pixel blocks do at every other block (20 m tiles of 512 = 1024 pixels at
// 10 m). Over HTTP each such tile is a request and bytes the chip does not need. Smaller
// square blocks cut that overreach; pixel values do not depend on the block size.
constexpr int kWarpBlock = 128;

void set_warp_block_size(const std::string& vrt, int size) {
  VSILFILE* f = VSIFOpenL(vrt.c_str(), "rb");
  if (!f) return;
  std::string xml;
  char buffer[65536];
  for (std::size_t n; (n = VSIFReadL(buffer, 1, sizeof buffer, f)) > 0;) xml.append(buffer, n);
  VSIFCloseL(f);
  for (const char* tag : {"BlockXSize", "BlockYSize"}) {
    const std::string open = fmt::format("<{}>", tag), close = fmt::format("</{}>", tag);
    const auto at = xml.find(open);
    const auto end = at == std::string::npos ? at : xml.find(close, at);
    if (end == std::string::npos) return;
    xml.replace(at + open.size(), end - at - open.size(), std::to_string(size));
  }
  f = VSIFOpenL(vrt.c_str(), "wb");
  if (!f) return;
  VSIFWriteL(xml.data(), 1, xml.size(), f);
  VSIFCloseL(f);
}

// A single-band file reprojected onto the 10 m grid, as a VRT in /vsimem owned by `files`.
std::string onto_grid(const std::string& file, const GridInfo& grid, const char* resampling, bool nodata_zero,
                      const std::string& what, const std::string& label, VsimemFiles& files) {
  const GdalDatasetPtr src = adopt_dataset(GDALOpen(file.c_str(), GA_ReadOnly));
  if (!src) {
    throw InputError(fmt::format("{}: {} ('{}') cannot be opened ({}); {}", label, what, file, CPLGetLastErrorMsg(),
                                 is_network_path(file) ? "check the URL and that the server answers (timeouts: "
                                                         "GDAL_HTTP_CONNECTTIMEOUT, GDAL_HTTP_LOW_SPEED_TIME)"
                                                       : "the product may be incomplete, re-download it"));
  }
  // Already on the grid (the 10 m bands): read in place. Warping onto the same grid would
  // give the same values (bilinear weights 1 and 0, nodata 0 kept) but read whole warp
  // blocks with their kernel margin, i.e. tiles the chips do not need.
  double gt[6];
  const OGRSpatialReference* srs = src->GetSpatialRef();
  OGRSpatialReference grid_srs;
  if (src->GetGeoTransform(gt) == CE_None && srs && grid_srs.importFromWkt(grid.crs_wkt.c_str()) == OGRERR_NONE &&
      src->GetRasterXSize() == grid.width && src->GetRasterYSize() == grid.height &&
      std::equal(gt, gt + 6, grid.geotransform.begin()) && srs->IsSame(&grid_srs)) {
    return file;
  }
  std::vector<std::string> args{"-of", "VRT", "-r", resampling, "-et", "0"};  // exact transformer
  if (nodata_zero) args.insert(args.end(), {"-srcnodata", "0", "-dstnodata", "0"});
  for (const auto& a : grid_args(grid)) args.push_back(a);
  const std::string dst = files.make(what + ".vrt");
  run_warp(dst, GDALDataset::ToHandle(src.get()), args, what, label);
  set_warp_block_size(dst, kWarpBlock);
  return dst;
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

// A lazy uint8 mask (1 = cloud, nodata tag 100) on `grid`: a VRT whose band maps pixel
// values of the given bands of `source` through look-up tables - nothing is read until
// pixels are, so a run over an area of interest reads only that area's blocks. Each
// entry of `luts` is (band, "in:out,..." listing every value the band can hold);
// later bands are OR-ed in: their 0 pixels (VRT NODATA) leave the earlier value.
std::string lut_mask(const std::string& source, const GridInfo& grid, const std::string& stem,
                     const std::vector<std::pair<int, std::string>>& luts, VsimemFiles& files) {
  std::string sources;
  bool first = true;
  for (const auto& [band, lut] : luts) {
    char* name = CPLEscapeString(source.c_str(), -1, CPLES_XML);
    sources += fmt::format(
        "  <ComplexSource><SourceFilename relativeToVRT=\"0\">{}</SourceFilename><SourceBand>{}</SourceBand>"
        "<SrcRect xOff=\"0\" yOff=\"0\" xSize=\"{}\" ySize=\"{}\"/><DstRect xOff=\"0\" yOff=\"0\" "
        "xSize=\"{}\" ySize=\"{}\"/>{}<LUT>{}</LUT></ComplexSource>\n",
        name, band, grid.width, grid.height, grid.width, grid.height, first ? "" : "<NODATA>0</NODATA>", lut);
    CPLFree(name);
    first = false;
  }
  char* srs = CPLEscapeString(grid.crs_wkt.c_str(), -1, CPLES_XML);
  const auto& g = grid.geotransform;
  const std::string xml = fmt::format(
      "<VRTDataset rasterXSize=\"{}\" rasterYSize=\"{}\">\n  <SRS>{}</SRS>\n"
      "  <GeoTransform>{:.17g}, {:.17g}, {:.17g}, {:.17g}, {:.17g}, {:.17g}</GeoTransform>\n"
      "  <VRTRasterBand dataType=\"Byte\" band=\"1\"><NoDataValue>100</NoDataValue>\n{}  </VRTRasterBand>\n"
      "</VRTDataset>\n",
      grid.width, grid.height, srs, g[0], g[1], g[2], g[3], g[4], g[5], sources);
  CPLFree(srs);
  const std::string path = files.make(stem + ".vrt");
  VSILFILE* f = VSIFOpenL(path.c_str(), "wb");
  const bool written = f && VSIFWriteL(xml.data(), 1, xml.size(), f) == xml.size();
  if (f) VSIFCloseL(f);
  if (!written) throw InputError(fmt::format("the product mask from '{}' cannot be written in memory; free some memory",
                                             source));
  return path;
}

// "0:a0,1:a1,...": every value of an 8-bit band, out = is_cloud(value).
template <typename IsCloud>
std::string byte_lut(IsCloud is_cloud) {
  std::string lut;
  for (int v = 0; v < 256; ++v) lut += fmt::format("{}{}:{}", v ? "," : "", v, is_cloud(v) ? 1 : 0);
  return lut;
}

}  // namespace

const std::vector<std::string>& farmvibes_band_order() {
  static const std::vector<std::string> order{"B01", "B02", "B03", "B04", "B05", "B06",
                                              "B07", "B08", "B8A", "B09", "B11", "B12"};
  return order;
}

Sentinel2Scene stack_sentinel2_bands(const Sentinel2BandFiles& in) {
  ensure_gdal_initialised();
  const GdalErrorScope quiet;
  const NetworkTimeoutScope timeouts;
  const std::string& path = in.product;
  const std::string& label = in.label;
  if (in.bands.size() != farmvibes_band_order().size() || in.band_offsets.size() != in.bands.size()) {
    throw InternalError(fmt::format("{}: {} band files and {} offsets given, {} expected", label, in.bands.size(),
                                    in.band_offsets.size(), farmvibes_band_order().size()));
  }
  Sentinel2Scene scene;
  scene.product = path;
  scene.processing_baseline = in.processing_baseline;
  scene.band_offsets = in.band_offsets;
  scene.datetime = in.datetime;
  scene.start_datetime = in.start_datetime;
  scene.end_datetime = in.end_datetime;
  scene.stac_item = in.stac_item;
  // The 10 m grid of B02, as FarmVibes stacks onto it.
  GridInfo grid;
  {
    RasterReader b02(in.bands[1], fmt::format("{} band B02", label));
    grid = b02.grid();
  }
  std::vector<std::string> sources;
  for (std::size_t i = 0; i < in.bands.size(); ++i) {
    sources.push_back(onto_grid(in.bands[i], grid, "bilinear", true, farmvibes_band_order()[i], label, scene.files));
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
    throw InputError(fmt::format("{}: stacking the bands failed ({})", label, CPLGetLastErrorMsg()));
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
  const std::string& classi = in.msk_classi;
  const std::string& gml = in.msk_clouds_gml;
  const std::string& scl = in.scl;
  if (!classi.empty()) {
    // Bands: 1 opaque clouds, 2 cirrus, 3 snow; clouds are the first two.
    const std::string on_grid = onto_grid(classi, grid, "near", false, "MSK_CLASSI", label, scene.files);
    // Non-zero in band 1 or 2 (of up to 65535): 0 -> 0 and 1..65535 -> 1, band 2 OR-ed in.
    const GdalDatasetPtr bands = adopt_dataset(GDALOpen(on_grid.c_str(), GA_ReadOnly));
    std::vector<std::pair<int, std::string>> luts{{1, "0:0,1:1,65535:1"}};
    if (bands && bands->GetRasterCount() >= 2) luts.emplace_back(2, "0:0,1:1,65535:1");
    scene.product_mask_path = lut_mask(on_grid, grid, "pm_classi", luts, scene.files);
    scene.product_mask_source = "MSK_CLASSI";
  } else if (GdalDatasetPtr vec = gml.empty() ? nullptr
                                              : adopt_dataset(GDALOpenEx(gml.c_str(), GDAL_OF_VECTOR, nullptr, nullptr,
                                                                         nullptr))) {
    // The GML's polygons are burnt into a whole plane on this grid (and a uint16 plane
    // read for it): check that it fits before anything is allocated.
    require_memory(static_cast<std::uint64_t>(grid.width) * static_cast<std::uint64_t>(grid.height) * 4,
                   fmt::format("{} (B02 is {}x{} pixels)", label, grid.width, grid.height));
    const std::string empty = classify_to_mask(in.bands[1], grid, "pm_gml", 1, scene.files,
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
    const std::string on_grid = onto_grid(scl, grid, "near", false, "SCL", label, scene.files);
    // Scene classification: 3 cloud shadow, 8 cloud medium, 9 cloud high, 10 thin cirrus.
    scene.product_mask_path = lut_mask(on_grid, grid, "pm_scl",
                                       {{1, byte_lut([](int c) { return c == 3 || c == 8 || c == 9 || c == 10; })}},
                                       scene.files);
    scene.product_mask_source = "SCL";
  } else {
    scene.product_mask_source = "none";
  }
  return scene;
}

bool looks_like_sentinel2_scene(const std::string& path) {
  return looks_like_stac_item(path) || looks_like_sentinel2_safe(path);
}

Sentinel2Scene open_sentinel2_scene(const std::string& path) {
  if (looks_like_stac_item(path)) return open_stac_item(path);
  return open_sentinel2_safe(path);
}

void write_sentinel2_stack(const Sentinel2Scene& scene, const std::string& path, const std::string& role) {
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
