#include "nimbus/models/default_models.h"

namespace nimbus {
namespace embedded {
extern const std::string nimbus_cloud_v1;
extern const std::string nimbus_shadow_v1;
}  // namespace embedded

EmbeddedModel default_cloud_model() { return {"nimbus_cloud_v1", embedded::nimbus_cloud_v1}; }
EmbeddedModel default_shadow_model() { return {"nimbus_shadow_v1", embedded::nimbus_shadow_v1}; }

}  // namespace nimbus
