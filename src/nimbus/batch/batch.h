// Many scenes in one go: a CSV manifest in, one mask per scene out. Each finished
// mask gets a record (its sha256 and what produced it), so an interrupted batch
// resumes by skipping scenes whose output still verifies against its record.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "nimbus/pipeline/improve_cloud_mask.h"
#include "nimbus/raster/atomic_output.h"

namespace nimbus {

struct BatchScene {
  std::string id;            // output name stem; unique within a batch
  std::string s2_raster;     // raster or SAFE product
  std::string product_mask;  // empty: derived from a SAFE product
};

// Reads a manifest: a STAC ItemCollection (saved search results; JSON file, GDAL path or
// http(s) URL), one scene per item, named "<collection>#<item id>", with the item's id
// (filename_safe_id) as scene id; or (UTF-8, with or without a byte-order mark; UTF-16 is refused with
// the fix): CSV with a header row naming the columns s2_raster (required),
// product_mask and id (optional); quoted fields as in RFC 4180; blank lines and lines
// starting with '#' are skipped. Relative paths are relative to the manifest's
// directory. A missing id is the STAC item's id (filename_safe_id) for a STAC item
// (file or URL), else derived from the raster's name. Throws InputError with
// the manifest's line on any problem (unknown column, duplicate id, empty path).
std::vector<BatchScene> read_batch_manifest(const std::string& manifest_path);

// `id` usable as a scene id (a file name stem): characters other than letters, digits
// and -_.+=@, become '_', as does a leading '.'; cut to the file-name limit.
std::string filename_safe_id(const std::string& id);

// The id of a scene from its raster path: file stem; for SAFE products the product
// name ("S2A_MSIL2A_..."), also for their MTD_MSIL2A.xml and .zip.
std::string scene_id_from_path(const std::string& s2_raster);

// Throws InputError unless ids are non-empty, unique and usable as file names (no
// '/', no leading '.', no control character, short enough for <id>.tif.nimbus.json).
void check_scene_ids(const std::vector<BatchScene>& scenes);

// Throws InputError, before any scene runs, when an output of the batch (<id>.tif,
// its record, `extra_outputs`) would be an input of any scene (raster, product mask,
// inside a SAFE product), a model of `options`, or one of `extra_inputs` (the manifest);
// and, unless options.overwrite, when an <id>.tif exists that its record does not
// show was made from this scene's recipe (the batch would replace it).
// With stac_items, the scenes' STAC Items and the batch's ItemCollection are outputs too.
void check_batch_outputs(const std::vector<BatchScene>& scenes, const std::string& out_dir,
                         const ImproveCloudMaskOptions& options, const std::vector<RunInput>& extra_inputs = {},
                         const std::vector<std::string>& extra_outputs = {}, bool stac_items = false);

// Before any scene runs: the STAC item of every scene that has one is read and checked
// (an L2A item with every band; remote assets are not probed, so this is cheap). One
// entry per scene: the error line, or empty (fine, or not a STAC item).
std::vector<std::string> check_batch_items(const std::vector<BatchScene>& scenes);

// Every problem with the manifest's input paths (missing file, URL, FIFO or device),
// each path once with the scenes that name it, e.g. "scene a, scene b: input 'x.tif'
// does not exist; fix the manifest". Empty when every path can be read; run_batch
// refuses to start otherwise, so a batch never computes half its scenes and then
// stops at a typo.
std::vector<std::string> batch_input_problems(const std::vector<BatchScene>& scenes);

// <out_dir>/<id>.tif and its record <out_dir>/<id>.tif.nimbus.json.
std::string scene_output_path(const std::string& out_dir, const std::string& id);
std::string scene_record_path(const std::string& out_dir, const std::string& id);
// <out_dir>/<id>.json: the STAC Item of the scene's mask (asset href relative to it).
std::string scene_stac_item_path(const std::string& out_dir, const std::string& id);
// <out_dir>/items.geojson: the STAC ItemCollection of the batch's masks (absolute hrefs).
std::string batch_item_collection_path(const std::string& out_dir);

// What a scene's output depends on: Nimbus version, inputs (path, size, mtime),
// models, every parameter. A changed recipe means the output must be recomputed.
std::string scene_recipe(const BatchScene& scene, const ImproveCloudMaskOptions& options);

struct SceneOutcome {
  std::string id;
  std::string status;  // "done", "skipped" (verified earlier output) or "failed"
  std::string output;
  std::string sha256;  // of the output file (done or skipped)
  std::string error;   // the error line (failed)
  std::string stac_item;  // the scene's STAC Item (done or skipped, with stac_items)
  double seconds = 0.0;
};

// A scene that failed before it ran (e.g. its STAC item is broken).
SceneOutcome failed_scene(const BatchScene& scene, const std::string& out_dir, const std::string& error);

// Runs one scene unless its output is already finished and verified. Outputs and
// record are written atomically, so a scene is either complete or absent. Bad input
// is reported as a failed outcome; internal errors propagate. With stac_items, the
// mask's STAC Item is written as <id>.json with it, and a finished scene whose item is
// missing (or describes another file) is run again.
SceneOutcome process_batch_scene(const BatchScene& scene, const std::string& out_dir,
                                 const ImproveCloudMaskOptions& options, bool stac_items = false);

// Removes hidden partial files of these scenes' outputs (and records) left by killed
// processes; returns how many. With only_dead_processes, files whose writer (pid in
// the name) still runs on this machine are kept; without, call it only when no
// process can be writing them any more (e.g. after a distributed run has finished).
int remove_stale_partials(const std::vector<BatchScene>& scenes, const std::string& out_dir,
                          bool only_dead_processes);

// Progress inside the scene at `scene_index` (0-based): its chips and stages. A scene
// that is skipped (verified earlier output) reports none.
using BatchSceneProgress = std::function<void(int scene_index, const RunProgress& progress)>;

// All scenes in order, after checking every input path (batch_input_problems: throws
// InputError naming the first problem and how many there are); scenes whose STAC item
// fails check_batch_items fail without running. `progress(done_count, total, outcome)`
// after each one, `within_scene` as each runs. With stac_items, each mask gets its STAC
// Item and the batch its ItemCollection (write_batch_item_collection).
std::vector<SceneOutcome> run_batch(const std::vector<BatchScene>& scenes, const std::string& out_dir,
                                    const ImproveCloudMaskOptions& options,
                                    const std::function<void(int, int, const SceneOutcome&)>& progress,
                                    const BatchSceneProgress& within_scene = {}, bool stac_items = false);

// Writes batch_item_collection_path(out_dir): a STAC ItemCollection of these items
// (files written by the batch), asset hrefs made absolute so the collection works from
// anywhere (pystac, stackstac, odc-stac, `nimbus batch` again).
void write_batch_item_collection(const std::vector<std::string>& item_paths, const std::string& out_dir);

// One outcome as JSON: id, status, output, sha256, error, seconds.
Json outcome_json(const SceneOutcome& outcome);

// The per-scene status table as CSV (id,status,seconds,sha256,output,error).
std::string batch_report_csv(const std::vector<SceneOutcome>& outcomes);

}  // namespace nimbus
