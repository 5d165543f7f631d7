#!/usr/bin/env node
// Runs the TypeScript CLI through tsx's loader, so the checkout works after `npm ci`.
import { register } from "tsx/esm/api";

register();
await import("../src/cli/main.ts");
