import { createServer } from "node:http";
import type { Registry } from "prom-client";
import { listenHost } from "../edge.ts";

export interface MetricsServer {
  /** The bound address, e.g. 127.0.0.1:9464. */
  address: string;
  close(): Promise<void>;
}

/**
 * Serves `registry` in Prometheus' text format at `GET /metrics` on `listen`
 * (host:port, port 0 picks one), plain HTTP without authentication: bind it
 * to an address only the scraper reaches. Any other path is 404.
 */
export async function serveMetrics(listen: string, registry: Registry): Promise<MetricsServer> {
  const server = createServer((req, res) => {
    const path = (req.url ?? "").split("?")[0];
    if (path !== "/metrics" || (req.method !== "GET" && req.method !== "HEAD")) {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found: try /metrics\n");
      return;
    }
    registry.metrics().then(
      (text) => {
        res.writeHead(200, { "content-type": registry.contentType });
        res.end(req.method === "HEAD" ? undefined : text);
      },
      (err: Error) => {
        res.writeHead(500, { "content-type": "text/plain" }).end(`${err.message}\n`);
      },
    );
  });
  const host = listenHost(listen);
  const port = Number(listen.slice(listen.lastIndexOf(":") + 1));
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const a = server.address();
  if (!a || typeof a === "string") throw new Error("metrics: no address");
  return {
    address: a.family === "IPv6" ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
