/* The turn: which of a process's request threads runs Python now (see turn.c). */
#ifndef FASTSERVER_TURN_H
#define FASTSERVER_TURN_H

/* For the calling thread: take turns from now on (or no longer); patience_us > 0 sets how long
   a waiter waits for a holder that does not give the turn up. */
void fs_turn_enroll(int enrolled, long patience_us);
/* Before a wait on the connection, and when a request ends: hand the turn on if held. */
void fs_turn_give(void);
/* After that wait, and when a request begins: take the turn if this thread takes turns now,
   waiting for it if need be, and start timing the run. When fs_turn_wanted() says it takes the
   turn, call it without the GIL: the holder may need the GIL to give the turn up. */
void fs_turn_take(void);
/* Whether fs_turn_take() takes the turn (and may wait for it): else it only starts the timing. */
int fs_turn_wanted(void);

struct fs_turn_stats {
    unsigned long long taken;   /* turns taken */
    unsigned long long waited;  /* of those, after waiting for another holder */
    unsigned long long stolen;  /* of those, after waiting a whole patience */
};
void fs_turn_counts(struct fs_turn_stats *stats);

#endif
