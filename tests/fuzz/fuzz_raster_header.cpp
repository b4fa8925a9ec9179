// libFuzzer target: arbitrary bytes as the Sentinel-2 raster. Opens them with the
// reader (header, grid, CRS, band offsets), applies the input policy and reads a small
// window. A clean rejection is an InputError; anything else is a finding.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <cpl_vsi.h>

#include "nimbus/core/error.h"
#include "nimbus/raster/gdal_handles.h"
#include "nimbus/raster/raster_reader.h"

// The fuzzer owns its process, as the CLI does: GDAL's messages go to Nimbus' (silent)
// debug log and the block cache keeps the CLI's 256 MB bound.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  nimbus::configure_gdal_for_process();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string path = "/vsimem/nimbus-fuzz/scene.tif";
  VSILFILE* f = VSIFileFromMemBuffer(path.c_str(), const_cast<GByte*>(data), size, FALSE);
  if (f == nullptr) return 0;
  VSIFCloseL(f);
  try {
    const nimbus::RasterReader reader(path, "fuzzed raster");
    reader.require_digital_numbers();
    // Bounded reads: a header may claim any size.
    const int w = std::min(reader.width(), 16);
    const int h = std::min(reader.height(), 16);
    const std::size_t bands = static_cast<std::size_t>(std::min(reader.band_count(), 64));
    if (w > 0 && h > 0 && bands == static_cast<std::size_t>(reader.band_count())) {
      std::vector<float> values(bands * static_cast<std::size_t>(w) * h);
      std::vector<std::uint8_t> invalid(static_cast<std::size_t>(w) * h);
      reader.read_window(0, 0, w, h, values.data(), invalid.data());
    }
  } catch (const nimbus::InputError&) {
  }
  VSIUnlink(path.c_str());
  return 0;
}
