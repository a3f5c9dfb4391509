/*
 * notify: registry:2's webhook notifications (the `notifications:` section), delivered from the
 * store's events table (docs/notifications.md).
 *
 * Invariants:
 *  - an event exists exactly when its change committed: the store writes its row in the change's
 *    own transaction (store.h, store/meta_sql.c); this module only reads rows and moves cursors.
 *  - one delivery thread per enabled endpoint reads the rows after the endpoint's durable cursor,
 *    POSTs them in registry:2's envelope, and moves the cursor past them only after a 2xx: a
 *    restart (SIGKILL included) resumes at the cursor, so every event is delivered at least once,
 *    in seq order (hence in order per repository), and a redelivery carries the same event id.
 *  - the thread holds the lease "notify:<endpoint>" while it delivers, so several berths on one
 *    database do not deliver an event twice routinely (only when a holder dies mid-batch).
 *  - nothing on the request path waits for an endpoint: a push writes its row and returns.
 *  - an endpoint's undelivered events are bounded by its queuelimit: past it the oldest are
 *    skipped, with a warning naming how many and the dropped-events metric.
 */
#ifndef BERTH_NOTIFY_H
#define BERTH_NOTIFY_H

#include "config.h"
#include "store/store.h"

typedef struct notify notify;
struct http_req;

/* Starts a delivery thread per enabled endpoint; NULL when none is configured (or on failure,
 * logged). */
notify *notify_start(const config *cfg, store *st);
/* Stops the threads (waiting at most for a POST in flight) and frees n (NULL is fine). */
void notify_stop(notify *n);
/* Sets the calling thread's event context (store_event_context) from request r: the signed-in
 * user, a request id, the client's address, Host, method and User-Agent. Costs nothing when
 * notifications are off. */
void notify_request_context(struct http_req *r);

#endif
