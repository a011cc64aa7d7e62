// The console's SQL page in headless Chromium: a running job's view is listed with an endpoint a
// row and its URL; the copy button puts the URL on the clipboard (read back). Saves a screenshot,
// prints what it saw as JSON.
// Usage: node sql-views.mjs URL TOKEN SCREENSHOT VIEW ENDPOINT
import { withPage, signIn } from './chromium.mjs';

const [url, token, screenshot, view, endpoint] = process.argv.slice(2);
await withPage(url, { width: 1280, height: 900 }, async (page, seen) => {
  if (await signIn(page, await page.goto(url + 'sql'), token, seen)) {
    await page.goto(url + 'sql');
  }
  const row = page.locator(`#views tr[data-view="${view}"][data-endpoint="${endpoint}"]`);
  await row.locator('button[data-copy]').waitFor({ timeout: 20000 });
  seen.endpoints = await page.locator(`#views tr[data-view="${view}"]`).evaluateAll(rs => rs.map(r => r.dataset.endpoint));
  seen.shown = await row.locator('code.url').textContent();
  await row.locator('button[data-copy]').click();
  seen.copied = await page.evaluate(() => navigator.clipboard.readText());
  seen.button = await row.locator('button[data-copy]').textContent();
  await page.screenshot({ path: screenshot, fullPage: true });
}, { permissions: ['clipboard-read', 'clipboard-write'] });
