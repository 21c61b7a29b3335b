// Prisma 7 CLI config: only `generate` runs here (offline, see tests/test_serverless_driver.py); no migrations.
import { defineConfig } from "prisma/config";

export default defineConfig({
  schema: "prisma/schema.prisma",
  datasource: { url: process.env.DIRECT_URL ?? "" },
});
