import { Command } from "commander";
import { registerCp } from "./cp.ts";
import { registerExec } from "./exec.ts";
import { registerImageExport } from "./image-export.ts";
import { registerImageGc } from "./image-gc.ts";
import { registerImageImport } from "./image-import.ts";
import { registerImageInspect } from "./image-inspect.ts";
import { registerImageLs } from "./image-ls.ts";
import { registerImageRm } from "./image-rm.ts";
import { registerSecretCreate } from "./secret-create.ts";
import { registerSecretLs } from "./secret-ls.ts";
import { registerSecretRm } from "./secret-rm.ts";
import { registerServe } from "./serve.ts";
import { registerTaskCreate } from "./task-create.ts";
import { registerTaskLs } from "./task-ls.ts";
import { registerTaskRm } from "./task-rm.ts";
import { registerTokenIssue } from "./token-issue.ts";

const program = new Command("taskrouter")
  .description("task command router: run commands inside tasks over gRPC")
  .option("--server <host:port>", "router address (default: $TASKROUTER_SERVER or 127.0.0.1:7878)")
  .option("--token <jwt>", "bearer token for the router (default: $TASKROUTER_TOKEN)")
  .option("--tls", "connect with TLS (system CAs unless --tls-ca)")
  .option("--tls-ca <file>", "trust this PEM CA or certificate (implies --tls)")
  .option("--tls-insecure", "TLS without checking the certificate, for dev certs (implies --tls)")
  .enablePositionalOptions();

registerServe(program);
registerExec(program);
registerCp(program);
const task = program.command("task").description("manage tasks");
registerTaskCreate(task);
registerTaskLs(task);
registerTaskRm(task);
const token = program.command("token").description("mint tokens with the router's key");
registerTokenIssue(token);
const secret = program.command("secret").description("manage secrets (env vars for secret_ids)");
registerSecretCreate(secret);
registerSecretLs(secret);
registerSecretRm(secret);
const image = program.command("image").description("manage images (snapshots, imports)");
registerImageLs(image);
registerImageInspect(image);
registerImageRm(image);
registerImageGc(image);
registerImageImport(image);
registerImageExport(image);

await program.parseAsync(process.argv);
