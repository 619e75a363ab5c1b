// SPDX-License-Identifier: Apache-2.0
#include "store.hpp"

namespace todd::server {

namespace {

/** RAII prepared statement. */
struct Stmt {
    sqlite3_stmt *s = nullptr;
    Stmt(sqlite3 *db, const char *sql)
    {
        if (sqlite3_prepare_v2(db, sql, -1, &s, nullptr) != SQLITE_OK)
            s = nullptr;
    }
    ~Stmt() { sqlite3_finalize(s); }
    void bind(int i, const std::string &v)
    {
        sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()),
                          SQLITE_TRANSIENT);
    }
    std::string col(int i)
    {
        auto *p = reinterpret_cast<const char *>(sqlite3_column_text(s, i));
        return p ? std::string(p,
                               static_cast<size_t>(sqlite3_column_bytes(s, i)))
                 : std::string();
    }
};

} // namespace

Store::Store(const std::string &path) : path_(path)
{
    if (sqlite3_open_v2(path.c_str(), &db_,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                            SQLITE_OPEN_FULLMUTEX,
                        nullptr) != SQLITE_OK) {
        std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
        sqlite3_close(db_);
        db_ = nullptr;
        throw StoreError("cannot open database " + path + ": " + msg);
    }
    sqlite3_busy_timeout(db_, 5000);
    exec("PRAGMA journal_mode=WAL");
    exec("CREATE TABLE IF NOT EXISTS objects ("
         " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
         " type TEXT NOT NULL, label TEXT NOT NULL, json TEXT NOT NULL,"
         " UNIQUE(type, label))");
    exec("CREATE TABLE IF NOT EXISTS results ("
         " uuid TEXT PRIMARY KEY, label TEXT NOT NULL,"
         " statuses TEXT NOT NULL, cleandata TEXT NOT NULL,"
         " created INTEGER NOT NULL DEFAULT (strftime('%s','now')))");
    // Added for the dashboard; a database of an older server gains them.
    if (!has_column("results", "started_ms"))
        exec("ALTER TABLE results ADD COLUMN started_ms INTEGER NOT NULL"
             " DEFAULT 0");
    if (!has_column("results", "ended_ms"))
        exec("ALTER TABLE results ADD COLUMN ended_ms INTEGER NOT NULL"
             " DEFAULT 0");
    exec("CREATE INDEX IF NOT EXISTS results_by_label ON results(label,"
         " created)");
}

bool Store::has_column(const char *table, const char *column)
{
    Stmt st(db_, (std::string("PRAGMA table_info(") + table + ")").c_str());
    if (!st.s)
        fail("prepare");
    while (sqlite3_step(st.s) == SQLITE_ROW)
        if (st.col(1) == column)
            return true;
    return false;
}

void Store::ping()
{
    std::lock_guard lk(mu_);
    Stmt st(db_, "SELECT count(*) FROM objects");
    if (!st.s || sqlite3_step(st.s) != SQLITE_ROW)
        fail("reading");
}

Store::~Store()
{
    sqlite3_close(db_);
}

void Store::fail(const std::string &what)
{
    throw StoreError(path_ + ": " + what + ": " + sqlite3_errmsg(db_));
}

void Store::exec(const char *sql)
{
    char *err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
        std::string msg = err ? err : "unknown error";
        sqlite3_free(err);
        throw StoreError(path_ + ": " + msg);
    }
}

void Store::put_object(const StoredObject &obj)
{
    std::lock_guard lk(mu_);
    Stmt st(db_, "INSERT INTO objects(type, label, json) VALUES(?,?,?)"
                 " ON CONFLICT(type, label) DO UPDATE SET json=excluded.json");
    if (!st.s)
        fail("prepare");
    st.bind(1, obj.type);
    st.bind(2, obj.label);
    st.bind(3, obj.json);
    if (sqlite3_step(st.s) != SQLITE_DONE)
        fail("storing object " + obj.type + "/" + obj.label);
}

bool Store::delete_object(const std::string &type, const std::string &label)
{
    std::lock_guard lk(mu_);
    Stmt st(db_, "DELETE FROM objects WHERE type=? AND label=?");
    if (!st.s)
        fail("prepare");
    st.bind(1, type);
    st.bind(2, label);
    if (sqlite3_step(st.s) != SQLITE_DONE)
        fail("deleting object " + type + "/" + label);
    return sqlite3_changes(db_) > 0;
}

std::vector<StoredObject> Store::list_objects(const std::string &type)
{
    std::lock_guard lk(mu_);
    Stmt st(db_, "SELECT type, label, json FROM objects WHERE type=?"
                 " ORDER BY seq");
    if (!st.s)
        fail("prepare");
    st.bind(1, type);
    std::vector<StoredObject> out;
    int rc;
    while ((rc = sqlite3_step(st.s)) == SQLITE_ROW)
        out.push_back({st.col(0), st.col(1), st.col(2)});
    if (rc != SQLITE_DONE)
        fail("listing objects");
    return out;
}

std::optional<StoredObject> Store::get_object(const std::string &type,
                                              const std::string &label)
{
    std::lock_guard lk(mu_);
    Stmt st(db_, "SELECT type, label, json FROM objects"
                 " WHERE type=? AND label=?");
    if (!st.s)
        fail("prepare");
    st.bind(1, type);
    st.bind(2, label);
    int rc = sqlite3_step(st.s);
    if (rc == SQLITE_ROW)
        return StoredObject{st.col(0), st.col(1), st.col(2)};
    if (rc != SQLITE_DONE)
        fail("reading object");
    return std::nullopt;
}

void Store::put_result(const StoredResult &r)
{
    std::lock_guard lk(mu_);
    Stmt st(db_, "INSERT OR REPLACE INTO results(uuid, label, statuses,"
                 " cleandata, started_ms, ended_ms) VALUES(?,?,?,?,?,?)");
    if (!st.s)
        fail("prepare");
    st.bind(1, r.uuid);
    st.bind(2, r.label);
    st.bind(3, r.statuses);
    st.bind(4, r.cleandata);
    sqlite3_bind_int64(st.s, 5, r.started_ms);
    sqlite3_bind_int64(st.s, 6, r.ended_ms);
    if (sqlite3_step(st.s) != SQLITE_DONE)
        fail("storing result " + r.uuid);
}

std::optional<StoredResult> Store::get_result(const std::string &uuid)
{
    std::lock_guard lk(mu_);
    Stmt st(db_, "SELECT uuid, label, statuses, cleandata, started_ms,"
                 " CASE ended_ms WHEN 0 THEN created * 1000 ELSE ended_ms END"
                 " FROM results WHERE uuid=?");
    if (!st.s)
        fail("prepare");
    st.bind(1, uuid);
    int rc = sqlite3_step(st.s);
    if (rc == SQLITE_ROW)
        return StoredResult{st.col(0),
                            st.col(1),
                            st.col(2),
                            st.col(3),
                            sqlite3_column_int64(st.s, 4),
                            sqlite3_column_int64(st.s, 5)};
    if (rc != SQLITE_DONE)
        fail("reading result");
    return std::nullopt;
}

std::vector<StoredResult> Store::recent_results(const std::string &label,
                                                size_t limit)
{
    std::lock_guard lk(mu_);
    Stmt st(db_, "SELECT uuid, label, statuses, cleandata, started_ms,"
                 " CASE ended_ms WHEN 0 THEN created * 1000 ELSE ended_ms END"
                 " AS ended FROM results WHERE ?1 = '' OR label = ?1"
                 " ORDER BY created DESC, ended DESC LIMIT ?2");
    if (!st.s)
        fail("prepare");
    st.bind(1, label);
    sqlite3_bind_int64(st.s, 2, static_cast<sqlite3_int64>(limit));
    std::vector<StoredResult> out;
    int rc;
    while ((rc = sqlite3_step(st.s)) == SQLITE_ROW)
        out.push_back({st.col(0), st.col(1), st.col(2), st.col(3),
                       sqlite3_column_int64(st.s, 4),
                       sqlite3_column_int64(st.s, 5)});
    if (rc != SQLITE_DONE)
        fail("reading results");
    return out;
}

} // namespace todd::server
