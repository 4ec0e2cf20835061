/* The turn: which of a process's request threads runs Python now (see turn.c). */
#ifndef FASTSERVER_TURN_H
#define FASTSERVER_TURN_H

/* For the calling thread: take turns from now on (or no longer); patience_us > 0 sets how long
   a waiter waits for a holder that does not give the turn up. */
void fs_turn_enroll(int enrolled, long patience_us);
/* Before a wait on the connection, and when a request ends: hand the turn on if held. */
void fs_turn_give(void);
/* After that wait, and when a request begins: wait for the turn if this thread takes it (never
   with the GIL held: the holder may need the GIL to give it up). */
void fs_turn_take(void);
/* Whether fs_turn_take() would wait for the turn: without, it only starts timing a run. */
int fs_turn_wanted(void);

struct fs_turn_stats {
    unsigned long long taken;   /* turns taken */
    unsigned long long waited;  /* of those, after waiting for another holder */
    unsigned long long stolen;  /* of those, from a holder that kept it past the patience */
};
void fs_turn_counts(struct fs_turn_stats *stats);

#endif
