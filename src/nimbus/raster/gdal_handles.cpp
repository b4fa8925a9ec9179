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

// The last network failure GDAL reported on this thread: a later, generic message
// ("TIFFReadEncodedTile() failed") replaces it as CPLGetLastErrorMsg().
thread_local std::string last_network_failure;

void gdal_messages_to_debug_log(CPLErr level, CPLErrorNum, const char* msg) {
  // GDAL failures become exceptions with context at the call site (from
  // CPLGetLastErrorMsg); here the detail is only kept for debugging.
  if (level >= CE_Warning) logger()->debug("GDAL: {}", msg ? msg : "");
  if (level >= CE_Failure && msg) {
    const std::string text = msg;
    for (const char* symptom : {"CURL error", "HTTP", "response_code", "timed out", "too slow",
                                "Could not resolve", "Connection refused"}) {
      if (text.find(symptom) != std::string::npos) {
        last_network_failure = text;
        break;
      }
    }
  }
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

std::string take_network_failure() {
  std::string failure;
  failure.swap(last_network_failure);
  return failure;
}

void configure_gdal_for_process() {
  GDALAllRegister();
  CPLSetErrorHandler(gdal_messages_to_debug_log);
  if (!CPLGetConfigOption("GDAL_CACHEMAX", nullptr)) GDALSetCacheMax64(static_cast<GIntBig>(256) << 20);
}

}  // namespace nimbus
