import { setMaxListeners } from "node:events";
import type { AgentConn } from "./agent-conn.ts";

const signals = new WeakMap<AgentConn, AbortSignal>();

/**
 * A signal that aborts once `conn` closed (one per connection, one reaction
 * on `conn.closed`). Who waits for an answer listens on it and removes its
 * listener once answered, so what the listener holds (an exec's AgentProc,
 * its spec with the env) is not kept for the life of the connection, as a
 * `.then` on `conn.closed` per wait would.
 */
export function closedSignal(conn: AgentConn): AbortSignal {
  let signal = signals.get(conn);
  if (!signal) {
    const ac = new AbortController();
    setMaxListeners(0, ac.signal); // one listener per start under way
    if (conn.isClosed) ac.abort();
    else void conn.closed.then(() => ac.abort());
    signal = ac.signal;
    signals.set(conn, signal);
  }
  return signal;
}
