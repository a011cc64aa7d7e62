// The console's SQL page in headless Chromium: a running `ferry sql run` job is stopped from its
// row's button; prints what it saw as JSON once the row says finished.
// Usage: node sql-stop.mjs URL TOKEN PROCESS
import { withPage, signIn } from './chromium.mjs';

const [url, token, process_] = process.argv.slice(2);
await withPage(url, { width: 1280, height: 900 }, async (page, seen) => {
  if (await signIn(page, await page.goto(url + 'sql'), token, seen)) {
    await page.goto(url + 'sql');
  }
  const row = page.locator(`#jobs tr[data-engine="ferry"][data-id="${process_}"]`);
  await row.locator('button[data-stop]').waitFor({ timeout: 20000 });
  seen.buttons = await row.locator('button').allTextContents();
  await row.locator('button[data-stop]').click();
  await page.locator('#asked').waitFor({ timeout: 20000 });
  seen.asked = await page.locator('#asked').textContent();
  await page.waitForFunction(p => document.querySelector(`#jobs tr[data-id="${p}"] td.state`)?.textContent === 'finished', process_, { timeout: 30000 });
  seen.state = await row.locator('td.state').textContent();
});
