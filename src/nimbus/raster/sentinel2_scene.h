// A Sentinel-2 L2A scene from its band files, wherever they come from (a SAFE
// product, a STAC item's assets): the 12 FarmVibes bands stacked on B02's 10 m
// grid, the per-band BOA offsets, and the product's own cloud mask.
#pragma once

#include <string>
#include <vector>

#include "nimbus/raster/gdal_handles.h"

namespace nimbus {

// B01..B12 without B10, FarmVibes' download_stack_sentinel2 order.
const std::vector<std::string>& farmvibes_band_order();

// The files of one scene, as GDAL paths (local files, /vsizip/..., /vsicurl/...).
struct Sentinel2BandFiles {
  std::string product;               // what the user gave (a SAFE path, a STAC item path or URL)
  std::string label;                 // how errors name it, e.g. "Sentinel-2 product 'X'" or "STAC item 'X'"
  std::vector<std::string> bands;    // one per farmvibes_band_order() entry
  std::vector<double> band_offsets;  // BOA_ADD_OFFSET per band (0 before baseline 04.00 or when already applied)
  std::string processing_baseline;   // e.g. "04.00"; empty when unknown
  // Product cloud mask sources, best first; empty where absent.
  std::string msk_classi;      // MSK_CLASSI_B00 (opaque, cirrus, snow bands)
  std::string msk_clouds_gml;  // MSK_CLOUDS_B00.gml (vector)
  std::string scl;             // scene classification
  // When the scene was acquired, as the source says it (ISO 8601, e.g. "2023-06-01T10:00:00Z"); empty when
  // unknown. A STAC item may give a range (start/end) instead of a datetime.
  std::string datetime, start_datetime, end_datetime;
  std::string stac_item;  // the STAC item the scene came from (path, URL or collection#id); empty otherwise
};

struct Sentinel2Scene {
  std::string product;               // the path given
  std::string stack_path;            // GDAL-openable 12-band VRT on the B02 (10 m) grid
  std::string processing_baseline;   // e.g. "04.00"; empty when not in the metadata
  std::vector<double> band_offsets;  // BOA_ADD_OFFSET per stacked band (0 before baseline 04.00)
  std::string product_mask_path;     // GDAL-openable uint8 mask on the stack's grid (non-zero = cloud)
  std::string product_mask_source;   // "MSK_CLASSI", "MSK_CLOUDS GML", "SCL", or "none"
  std::string datetime, start_datetime, end_datetime;  // acquisition time, as in Sentinel2BandFiles
  std::string stac_item;                               // as in Sentinel2BandFiles
  VsimemFiles files;                 // owns stack_path, product_mask_path and what they reference:
                                     // unlinked with the scene (close readers of them first)
};

// Stacks the bands onto B02's grid (bilinear, no-data 0 kept out of the
// interpolation) and derives the product mask, in GDAL's in-memory filesystem
// (owned by the returned scene; nothing is written to disk). Throws InputError
// naming the scene and the file that cannot be read.
Sentinel2Scene stack_sentinel2_bands(const Sentinel2BandFiles& files);

// True for what open_sentinel2_scene opens: a SAFE product or a STAC item.
bool looks_like_sentinel2_scene(const std::string& path);

// Opens a SAFE product (sentinel2_safe.h) or a STAC item (stac_item.h).
Sentinel2Scene open_sentinel2_scene(const std::string& path);

// Writes the 12-band stack as a COG (raw DN; the BOA offsets ride along as band
// metadata, which RasterReader applies), e.g. to inspect it or reuse it.
void write_sentinel2_stack(const Sentinel2Scene& scene, const std::string& path, const std::string& role);

}  // namespace nimbus
