#include "nimbus/server/run_outputs.h"

#include "nimbus/server/clock_and_ids.h"

namespace nimbus::server {

OJson output_item(const OJson& scene_item, const std::string& data_type, const std::string& asset_id,
                  const std::string& href) {
  static const char* kCopied[] = {"product_name",     "orbit_number",   "relative_orbit_number", "orbit_direction",
                                  "platform",         "extra_info",     "tile_id",               "processing_level",
                                  "start_datetime",   "end_datetime",   "datetime"};
  const OJson& in = scene_item["properties"];
  OJson props = OJson::object();
  for (const char* key : kCopied) {
    if (in.contains(key)) props[key] = in[key];
  }
  if (!props.contains("datetime")) props["datetime"] = nullptr;
  if (data_type == "Sentinel2CloudMask" || data_type == "CloudMask") {
    props["bands"] = OJson{{"cloud", 0}};
    props["categories"] = OJson::array({"Clear", "Cloud"});
  } else if (data_type == "Sentinel2CloudProbability") {
    props["bands"] = OJson{{"cloud", 0}};
  }
  OJson item = OJson::object();
  item["type"] = "Feature";
  item["stac_version"] = "1.0.0";
  item["id"] = new_uuid4();
  item["properties"] = props;
  item["geometry"] = scene_item["geometry"];
  item["links"] = OJson::array();
  OJson asset = OJson::object();
  asset["href"] = href;
  asset["type"] = "image/tiff";
  item["assets"] = OJson{{asset_id, asset}};
  if (scene_item.contains("bbox")) item["bbox"] = scene_item["bbox"];
  item["stac_extensions"] = OJson::array();
  item["terravibes_data_type"] = data_type;
  return item;
}

}  // namespace nimbus::server
