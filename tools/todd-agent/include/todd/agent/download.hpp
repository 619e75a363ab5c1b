// SPDX-License-Identifier: Apache-2.0
// DownloadAsset: fetch asset URLs (libcurl) into the asset directories.
#pragma once

#include <atomic>
#include <string>
#include <vector>

namespace todd::agent {

/** Outcome of one URL. */
struct DownloadResult {
    std::string url;
    bool ok = false;
    std::string path;  // written file when ok
    std::string error; // why not, when !ok
};

/**
 * Fetch each URL into <opt_dir>/assets/factcollectors when it contains
 * "factcollectors", else <opt_dir>/assets/testlets when it contains
 * "testlets" (as the Go agent), under its last path element. Each file is
 * written to a temporary in the target directory, fsynced, made 0755 and
 * renamed over the old one, so a failure never leaves a partial asset.
 * One failure does not stop the others. `cancel` aborts transfers.
 */
std::vector<DownloadResult>
download_assets(const std::vector<std::string> &urls,
                const std::string &opt_dir, const std::atomic<bool> &cancel);

} // namespace todd::agent
