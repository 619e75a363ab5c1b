// SPDX-License-Identifier: Apache-2.0
// Persistent objects and test-run results in one SQLite file.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace todd::server {

/** A storage operation failed; what() names the file and SQLite's reason. */
class StoreError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

struct StoredObject {
    std::string type, label, json; // json: compact, normalised
};

struct StoredResult {
    std::string uuid, label;
    std::string statuses;  // compact JSON {agent: {"role","status","reason"}}
    std::string cleandata; // the /v1/testdata body
    /** Wall-clock start and end (ms since the epoch); 0 in results stored
     *  before these were kept, whose end is then their row's creation. */
    int64_t started_ms = 0, ended_ms = 0;
};

/** Thread-safe; each call is one transaction. */
class Store {
  public:
    /** Open or create the database; throws StoreError. ":memory:" works. */
    explicit Store(const std::string &path);
    ~Store();
    Store(const Store &) = delete;
    Store &operator=(const Store &) = delete;

    /** Insert or replace; a replaced object keeps its place in the order. */
    void put_object(const StoredObject &obj);
    /** Delete one object; false when there was none. */
    bool delete_object(const std::string &type, const std::string &label);
    /** Objects of a type in creation order. */
    std::vector<StoredObject> list_objects(const std::string &type);
    std::optional<StoredObject> get_object(const std::string &type,
                                           const std::string &label);

    void put_result(const StoredResult &r);
    std::optional<StoredResult> get_result(const std::string &uuid);
    /** The newest results, newest first; label "" = of every testrun. At
     *  most limit rows are read. */
    std::vector<StoredResult> recent_results(const std::string &label,
                                             size_t limit);
    /** A trivial query: throws StoreError when the file is unusable. */
    void ping();

    const std::string &path() const { return path_; }

  private:
    void exec(const char *sql);
    bool has_column(const char *table, const char *column);
    [[noreturn]] void fail(const std::string &what);
    std::string path_;
    sqlite3 *db_ = nullptr;
    std::mutex mu_;
};

} // namespace todd::server
