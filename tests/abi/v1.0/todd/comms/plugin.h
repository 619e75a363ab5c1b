/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ToDD comms plugin ABI, major version 1.
 *
 * A transport plugin is a shared object named libtodd-comms-<name>.so that
 * exports exactly one symbol per ABI major it serves:
 * todd_comms_plugin_entry_v1. The host calls the entry, checks the returned
 * descriptor, then creates instances through the descriptor's function table.
 * ToDD's own semantics (adverts, tasks, responses, groups) live in the host; a
 * plugin only moves opaque bytes between named destinations.
 *
 * The contract in one page (docs/plugin-abi.md numbers each rule and says
 * what the host does when it is broken):
 *
 * Destinations
 *   A destination is a named queue. A message published to a destination that
 *   nobody subscribes to yet is held until a subscriber arrives or its
 *   time-to-live ends. Several subscribers of one destination compete: each
 *   message goes to one of them.
 *
 * Threading classes
 *   Discovery  the entry function. Side-effect free, callable any number of
 *              times from any thread, never concurrently with anything else
 *              in the same library.
 *   Control    create, destroy, start, stop, subscribe, unsubscribe. The host
 *              serialises these per instance and never calls them from inside
 *              a callback.
 *   Data       publish, publish_batch. Thread-safe: the host may call them
 *              from any thread, concurrently, and from inside a deliver
 *              callback. A plugin must make publish progress even while one
 *              of its own threads is blocked in deliver.
 *   Callbacks  host->log, host->deliver, host->state may be called from any
 *              plugin thread. Deliveries of one subscription are serialised
 *              and in order; different subscriptions may deliver concurrently.
 *
 * Quiescence
 *   When unsubscribe returns, no deliver for that cookie is running or will
 *   run. When stop returns, no callback of any kind is running or will run
 *   and every plugin thread has finished. After destroy the plugin holds no
 *   reference to the host context.
 *
 * Ownership
 *   Everything the host passes in (configuration, destinations, payloads,
 *   options) is borrowed for the duration of the call. Everything the plugin
 *   passes to a callback is borrowed for the duration of the callback; the
 *   host copies what it keeps. The descriptor, the configuration key table and
 *   every string in them are static and live as long as the library is
 *   loaded. Instances are allocated by create and freed by destroy, both in
 *   the plugin. Nothing allocated on one side is freed on the other.
 *
 * Errors
 *   Every function returns a todd_comms_status: 0 on success, a negative
 *   TODD_COMMS_E_* code otherwise. Details go through host->log just before
 *   returning. No C++ exception may cross this boundary in either direction.
 *
 * Versioning
 *   A minor version only appends: new fields at the end of a struct, new
 *   function pointers at the end of a table. struct_size tells the reader
 *   which fields exist; a NULL optional function means "not implemented".
 *   Use TODD_COMMS_HAS_FIELD to test a field of a struct received from the
 *   other side.
 */
#ifndef TODD_COMMS_PLUGIN_H
#define TODD_COMMS_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** ABI major: changes only when an existing field or signature changes. */
#define TODD_COMMS_ABI_MAJOR 1
/** ABI minor: grows when fields or functions are appended. */
#define TODD_COMMS_ABI_MINOR 0

/** Name of the entry symbol for ABI major 1, for dlsym. */
#define TODD_COMMS_ENTRY_SYMBOL_V1 "todd_comms_plugin_entry_v1"

/** Marks the one symbol a plugin exports. */
#if defined(__GNUC__)
#define TODD_COMMS_EXPORT __attribute__((visibility("default")))
#else
#define TODD_COMMS_EXPORT
#endif

/**
 * True when a struct of the other side, whose first member is
 * uint32_t struct_size, is large enough to contain FIELD.
 */
#define TODD_COMMS_HAS_FIELD(ptr, type, field)                                 \
    ((ptr) != NULL &&                                                          \
     (ptr)->struct_size >= offsetof(type, field) + sizeof((ptr)->field))

/* ------------------------------------------------------------------------ */
/* Status codes                                                             */

/** Result of every ABI function: 0 or a negative TODD_COMMS_E_* code. */
typedef int32_t todd_comms_status;

#define TODD_COMMS_OK 0
#define TODD_COMMS_E_INVAL (-1)       /**< bad argument */
#define TODD_COMMS_E_NOMEM (-2)       /**< out of memory */
#define TODD_COMMS_E_NOTSUP (-3)      /**< not supported by this transport */
#define TODD_COMMS_E_UNAVAILABLE (-4) /**< service unreachable right now */
#define TODD_COMMS_E_TIMEOUT (-5)     /**< gave up waiting */
#define TODD_COMMS_E_AUTH (-6)        /**< credentials refused */
#define TODD_COMMS_E_PROTOCOL (-7)    /**< the service refused the request */
#define TODD_COMMS_E_INTERNAL (-8)    /**< bug or escaped exception */
#define TODD_COMMS_E_STATE (-9)       /**< call not valid in this state */
#define TODD_COMMS_E_FULL (-10)       /**< a bound was hit */
#define TODD_COMMS_E_NOROUTE (-11)    /**< message could not be routed */
#define TODD_COMMS_E_CONFIG (-12)     /**< configuration refused */

/** Static English text for a status code; never NULL. */
static inline const char *todd_comms_status_str(todd_comms_status s)
{
    switch (s) {
    case TODD_COMMS_OK: return "ok";
    case TODD_COMMS_E_INVAL: return "invalid argument";
    case TODD_COMMS_E_NOMEM: return "out of memory";
    case TODD_COMMS_E_NOTSUP: return "not supported";
    case TODD_COMMS_E_UNAVAILABLE: return "service unavailable";
    case TODD_COMMS_E_TIMEOUT: return "timed out";
    case TODD_COMMS_E_AUTH: return "authentication refused";
    case TODD_COMMS_E_PROTOCOL: return "refused by the service";
    case TODD_COMMS_E_INTERNAL: return "internal error";
    case TODD_COMMS_E_STATE: return "invalid in this state";
    case TODD_COMMS_E_FULL: return "limit reached";
    case TODD_COMMS_E_NOROUTE: return "unroutable";
    case TODD_COMMS_E_CONFIG: return "invalid configuration";
    default: return "unknown status";
    }
}

/* ------------------------------------------------------------------------ */
/* Enumerations (plain integers: enum sizes are not part of a C ABI)        */

/** Log levels, most severe first. */
#define TODD_COMMS_LOG_ERROR 1
#define TODD_COMMS_LOG_WARN 2
#define TODD_COMMS_LOG_INFO 3
#define TODD_COMMS_LOG_DEBUG 4
#define TODD_COMMS_LOG_TRACE 5

/** Connection states reported through host->state. */
/** First attempt in progress. */
#define TODD_COMMS_STATE_CONNECTING 1
/** Usable. */
#define TODD_COMMS_STATE_CONNECTED 2
/** Lost, retrying with backoff. */
#define TODD_COMMS_STATE_RECONNECTING 3
/** An error the plugin reports; still retrying unless stopped. */
#define TODD_COMMS_STATE_FAILED 4
/** Stop completed. */
#define TODD_COMMS_STATE_STOPPED 5

/** The host's verdict on a delivered message, returned by host->deliver. */
/** Processed: forget it. */
#define TODD_COMMS_VERDICT_ACK 0
/** Not processed: deliver it again later. */
#define TODD_COMMS_VERDICT_REQUEUE 1
/** Poison: drop it, never redeliver. */
#define TODD_COMMS_VERDICT_REJECT 2

/** Capability flags in todd_comms_plugin_descriptor.capabilities. */
/** Requeue and reject are honoured (at-least-once delivery). */
#define TODD_COMMS_CAP_ACK (1ull << 0)
/** Publish time-to-live is honoured. */
#define TODD_COMMS_CAP_TTL (1ull << 1)
/** Publish returns after the service stored the message. */
#define TODD_COMMS_CAP_CONFIRMS (1ull << 2)
/** Messages can survive a service restart. */
#define TODD_COMMS_CAP_DURABLE (1ull << 3)
/** Peers may be other processes or machines. */
#define TODD_COMMS_CAP_REMOTE (1ull << 4)
/** Can encrypt and authenticate the link. */
#define TODD_COMMS_CAP_TLS (1ull << 5)
/** publish_batch is implemented. */
#define TODD_COMMS_CAP_BATCH (1ull << 6)

/** Flags of a delivered message. */
#define TODD_COMMS_MSG_REDELIVERED (1u << 0) /**< may have been seen before */

/** Types of configuration keys; the host checks values before create. */
#define TODD_COMMS_CFG_STRING 1
#define TODD_COMMS_CFG_INT 2    /**< decimal, optional sign */
#define TODD_COMMS_CFG_BOOL 3   /**< true/false, yes/no, on/off, 1/0 */
#define TODD_COMMS_CFG_LIST 4   /**< comma-separated strings */
#define TODD_COMMS_CFG_SECRET 5 /**< string never logged or printed */

/** Flags of a configuration key. */
#define TODD_COMMS_CFG_REQUIRED (1u << 0)

/* ------------------------------------------------------------------------ */
/* Opaque handles                                                           */

/** A plugin's instance; its layout belongs to the plugin. */
typedef struct todd_comms_instance todd_comms_instance;
/** The host's per-instance context, passed back in every callback. */
typedef struct todd_comms_host_ctx todd_comms_host_ctx;

/* ------------------------------------------------------------------------ */
/* Data passed across                                                       */

/** One configuration key the plugin understands (static, in the plugin). */
typedef struct todd_comms_config_key {
    const char *name;          /**< lower case, [a-z0-9_]+ */
    uint32_t type;             /**< TODD_COMMS_CFG_* */
    uint32_t flags;            /**< TODD_COMMS_CFG_REQUIRED */
    const char *default_value; /**< text form, or NULL for none */
    const char *description;   /**< one line, for help output */
} todd_comms_config_key;

/** One configuration value, borrowed for the call. */
typedef struct todd_comms_kv {
    const char *key;
    const char *value;
} todd_comms_kv;

/**
 * Configuration given to create. The host has already refused unknown keys
 * and values that do not parse as their declared type, and has added every
 * default value the user did not override; a key with no default and no
 * user value is absent.
 */
typedef struct todd_comms_config {
    uint32_t struct_size;
    uint32_t count;
    const todd_comms_kv *items;
} todd_comms_config;

/** Options of one publish; NULL means all defaults. */
typedef struct todd_comms_publish_opts {
    uint32_t struct_size;
    uint32_t flags;           /**< reserved, 0 */
    int64_t ttl_ms;           /**< expire unconsumed after this, 0 = never */
    const char *content_type; /**< NULL = "text/plain" */
} todd_comms_publish_opts;

/** One message of publish_batch. */
typedef struct todd_comms_outgoing {
    const char *destination;
    const uint8_t *payload;
    uint64_t payload_len;
    const todd_comms_publish_opts *opts; /**< may be NULL */
} todd_comms_outgoing;

/** Options of one subscription; NULL means all defaults. */
typedef struct todd_comms_subscribe_opts {
    uint32_t struct_size;
    uint32_t flags; /**< reserved, 0 */
    uint32_t
        prefetch; /**< unsettled deliveries in flight, 0 = plugin default */
    uint32_t reserved;
} todd_comms_subscribe_opts;

/** A delivered message, borrowed for the duration of host->deliver. */
typedef struct todd_comms_message {
    uint32_t struct_size;
    uint32_t flags;          /**< TODD_COMMS_MSG_* */
    const char *destination; /**< where it was published */
    const uint8_t *payload;  /**< not NUL-terminated */
    uint64_t payload_len;
    const char *content_type; /**< may be NULL */
} todd_comms_message;

/* ------------------------------------------------------------------------ */
/* What the host offers each instance                                       */

/** The host's services; valid from create until destroy returns. */
typedef struct todd_comms_host_api {
    uint32_t struct_size;
    uint32_t abi_minor; /**< the host's TODD_COMMS_ABI_MINOR */

    /** True when a message at this level would be kept: skip formatting
     *  otherwise. */
    int32_t (*log_enabled)(todd_comms_host_ctx *ctx, int32_t level);

    /** Log one pre-formatted UTF-8 line (no trailing newline needed). */
    void (*log)(todd_comms_host_ctx *ctx, int32_t level, const char *message);

    /**
     * Hand one message to the host. Returns a TODD_COMMS_VERDICT_*; the
     * plugin settles the message accordingly after this returns. The host
     * may block here while it processes the message, and may call publish
     * from inside. A cookie the host does not know yields REJECT.
     */
    int32_t (*deliver)(todd_comms_host_ctx *ctx, uint64_t cookie,
                       const todd_comms_message *message);

    /**
     * Report a connection state change (TODD_COMMS_STATE_*), with the status
     * that caused it and a human-readable detail (may be NULL).
     */
    void (*state)(todd_comms_host_ctx *ctx, int32_t state,
                  todd_comms_status status, const char *detail);
} todd_comms_host_api;

/** What the host tells the entry function about itself. */
typedef struct todd_comms_host_info {
    uint32_t struct_size;
    uint32_t abi_major;
    uint32_t abi_minor;
    uint32_t reserved;
    const char *host_version; /**< product version, e.g. "0.1.0" */
} todd_comms_host_info;

/* ------------------------------------------------------------------------ */
/* What the plugin offers                                                   */

/** Create an instance from a validated configuration (Control). */
typedef todd_comms_status (*todd_comms_create_fn)(
    const todd_comms_host_api *host, todd_comms_host_ctx *ctx,
    const todd_comms_config *config, todd_comms_instance **out);
/** Free an instance; stops it first if the host did not (Control). */
typedef void (*todd_comms_destroy_fn)(todd_comms_instance *self);
/** Start connecting in the background; returns without waiting for the
 *  service (Control). */
typedef todd_comms_status (*todd_comms_start_fn)(todd_comms_instance *self);
/** Stop; returns when quiescent. Final: only destroy may follow
 *  (Control). */
typedef todd_comms_status (*todd_comms_stop_fn)(todd_comms_instance *self);
/** Publish one message; returns after the transport accepted it, or after
 *  the service confirmed it when the plugin has TODD_COMMS_CAP_CONFIRMS
 *  (Data). */
typedef todd_comms_status (*todd_comms_publish_fn)(
    todd_comms_instance *self, const char *destination, const uint8_t *payload,
    uint64_t payload_len, const todd_comms_publish_opts *opts);
/** Publish several messages and wait for all of them; statuses[i] receives
 *  each one's result; returns the first failure or OK (Data, optional). */
typedef todd_comms_status (*todd_comms_publish_batch_fn)(
    todd_comms_instance *self, const todd_comms_outgoing *messages,
    uint32_t count, todd_comms_status *statuses);
/** Start delivering a destination's messages to host->deliver with this
 *  cookie; before start, takes effect at start (Control). */
typedef todd_comms_status (*todd_comms_subscribe_fn)(
    todd_comms_instance *self, const char *destination, uint64_t cookie,
    const todd_comms_subscribe_opts *opts);
/** Stop a subscription; returns when quiescent for that cookie (Control). */
typedef todd_comms_status (*todd_comms_unsubscribe_fn)(
    todd_comms_instance *self, uint64_t cookie);

/** The plugin's static description and function table. */
typedef struct todd_comms_plugin_descriptor {
    uint32_t struct_size;        /**< sizeof as the plugin was compiled */
    uint32_t abi_major;          /**< TODD_COMMS_ABI_MAJOR compiled against */
    uint32_t abi_minor;          /**< TODD_COMMS_ABI_MINOR compiled against */
    uint32_t min_host_abi_minor; /**< oldest host minor it works with */

    const char *name;        /**< equals <name> in libtodd-comms-<name>.so */
    const char *version;     /**< the plugin's own version */
    const char *description; /**< one line */
    const char *license;     /**< SPDX identifier */
    const char *vendor;      /**< who ships it; may be NULL */
    uint64_t capabilities;   /**< TODD_COMMS_CAP_* */

    const todd_comms_config_key *config_keys;
    uint32_t config_key_count;
    uint32_t reserved;

    /* Mandatory. */
    todd_comms_create_fn create;
    todd_comms_destroy_fn destroy;
    todd_comms_start_fn start;
    todd_comms_stop_fn stop;
    todd_comms_publish_fn publish;
    todd_comms_subscribe_fn subscribe;
    todd_comms_unsubscribe_fn unsubscribe;
    /* Optional (NULL when absent). */
    todd_comms_publish_batch_fn publish_batch;
} todd_comms_plugin_descriptor;

/**
 * The entry for ABI major 1 (Discovery). Returns a pointer to a static
 * descriptor, or NULL to decline this host. Must not allocate, start threads,
 * do I/O or initialise libraries.
 */
typedef const todd_comms_plugin_descriptor *(*todd_comms_entry_v1_fn)(
    const todd_comms_host_info *host);

/** Declaration of the entry; a plugin defines it with TODD_COMMS_EXPORT. */
TODD_COMMS_EXPORT const todd_comms_plugin_descriptor *
todd_comms_plugin_entry_v1(const todd_comms_host_info *host);

#ifdef __cplusplus
}
#endif

#endif /* TODD_COMMS_PLUGIN_H */
