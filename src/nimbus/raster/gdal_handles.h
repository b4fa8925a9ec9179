// Owners for what Nimbus takes from GDAL: every dataset handle and every /vsimem file
// is released by one of these on every path (return or exception), and GDAL's error
// handler is pushed and popped around each library call instead of replaced for the
// process.
#pragma once

#include <memory>
#include <string>
#include <vector>

class GDALDataset;

namespace nimbus {

struct GdalDatasetCloser {
  void operator()(GDALDataset* dataset) const noexcept;
};

// An open GDAL dataset, closed (GDALClose) when the owner goes.
using GdalDatasetPtr = std::unique_ptr<GDALDataset, GdalDatasetCloser>;

// Takes ownership of a dataset handle from GDAL's C API (GDALOpen, GDALWarp,
// GDALBuildVRT, ...); null stays null.
GdalDatasetPtr adopt_dataset(void* handle);

// Files in GDAL's in-memory file system (/vsimem/), unlinked when the owner goes:
// a scene's intermediate VRTs and masks do not outlive the scene. Move-only.
class VsimemFiles {
 public:
  VsimemFiles() = default;
  ~VsimemFiles();
  VsimemFiles(VsimemFiles&& other) noexcept;
  VsimemFiles& operator=(VsimemFiles&& other) noexcept;
  VsimemFiles(const VsimemFiles&) = delete;
  VsimemFiles& operator=(const VsimemFiles&) = delete;

  // A new /vsimem path unique in the process, ending in `stem`, owned from now on
  // (unlinked even if it is never written).
  std::string make(const std::string& stem);

  // Unlinks every owned file now.
  void clear() noexcept;

 private:
  std::vector<std::string> paths_;
};

// While alive, GDAL messages raised on the calling thread go to Nimbus' debug log
// rather than to the process' handler (a host's, e.g. rasterio's or the default one
// printing to stderr); the handler in place before is back on destruction. GDAL's
// handler stack is per thread, so every function that calls GDAL opens one, on
// whatever thread it runs. CPLGetLastErrorMsg() still holds the last message, which
// is what Nimbus' error messages quote.
class GdalErrorScope {
 public:
  GdalErrorScope();
  ~GdalErrorScope();
  GdalErrorScope(const GdalErrorScope&) = delete;
  GdalErrorScope& operator=(const GdalErrorScope&) = delete;
};

// The last network failure (a curl or HTTP error) GDAL reported on this thread inside a
// GdalErrorScope, and forgets it; empty when there was none. Reading a remote raster,
// GDAL's last message is often a generic decoder one that hides the cause.
std::string take_network_failure();

// For front ends that own the process (the CLI), never called by the library: GDAL
// messages from any thread, including GDAL's own worker threads, go to Nimbus' debug
// log, and GDAL's block cache is bounded to 256 MB unless GDAL_CACHEMAX is set (the
// default is 5 % of RAM; a chip row shares at most two block rows, so 256 MB keeps
// re-reads rare). A library host keeps its own handler and cache size.
void configure_gdal_for_process();

// GDAL's version as linked at run time, e.g. "3.6.2".
std::string gdal_runtime_version();

}  // namespace nimbus
