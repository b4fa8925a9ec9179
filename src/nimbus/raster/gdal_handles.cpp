#include "nimbus/raster/gdal_handles.h"

#include <atomic>

#include <cpl_conv.h>
#include <cpl_error.h>
#include <cpl_vsi.h>
#include <gdal_priv.h>

#include <fmt/format.h>
#include <unistd.h>

#include "nimbus/core/log.h"

namespace nimbus {
namespace {

void gdal_messages_to_debug_log(CPLErr level, CPLErrorNum, const char* msg) {
  // GDAL failures become exceptions with context at the call site (from
  // CPLGetLastErrorMsg); here the detail is only kept for debugging.
  if (level >= CE_Warning) logger()->debug("GDAL: {}", msg ? msg : "");
}

}  // namespace

std::string gdal_runtime_version() { return GDALVersionInfo("RELEASE_NAME"); }

void GdalDatasetCloser::operator()(GDALDataset* dataset) const noexcept {
  if (dataset) GDALClose(GDALDataset::ToHandle(dataset));
}

GdalDatasetPtr adopt_dataset(void* handle) { return GdalDatasetPtr(GDALDataset::FromHandle(handle)); }

VsimemFiles::~VsimemFiles() { clear(); }

VsimemFiles::VsimemFiles(VsimemFiles&& other) noexcept : paths_(std::move(other.paths_)) { other.paths_.clear(); }

VsimemFiles& VsimemFiles::operator=(VsimemFiles&& other) noexcept {
  if (this != &other) {
    clear();
    paths_ = std::move(other.paths_);
    other.paths_.clear();
  }
  return *this;
}

std::string VsimemFiles::make(const std::string& stem) {
  static std::atomic<unsigned long> counter{0};
  paths_.push_back(fmt::format("/vsimem/nimbus_{}_{}_{}", static_cast<long>(::getpid()), counter++, stem));
  return paths_.back();
}

void VsimemFiles::clear() noexcept {
  for (const std::string& path : paths_) VSIUnlink(path.c_str());
  paths_.clear();
}

GdalErrorScope::GdalErrorScope() { CPLPushErrorHandler(gdal_messages_to_debug_log); }

GdalErrorScope::~GdalErrorScope() { CPLPopErrorHandler(); }

void configure_gdal_for_process() {
  GDALAllRegister();
  CPLSetErrorHandler(gdal_messages_to_debug_log);
  if (!CPLGetConfigOption("GDAL_CACHEMAX", nullptr)) GDALSetCacheMax64(static_cast<GIntBig>(256) << 20);
}

}  // namespace nimbus
