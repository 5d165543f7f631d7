/** Stdin data at least this large is staged in a reused buffer (RouterClient.stage). */
export const STAGE_FROM = 64 * 1024;

/** Room for a TaskExecStdinWriteRequest's head in front of its data: ids, offset, eof, tags. */
export function stdinHeadroom(taskId: string, execId: string): number {
  return 64 + Buffer.byteLength(taskId) + Buffer.byteLength(execId);
}
