// The console's SQL page in headless Chromium: a topic's table offered from the schema registry
// is added to the editor's tables; typing a query completes a column's name with Tab. Saves a
// screenshot, prints what it saw as JSON.
// Usage: node sql-registry.mjs URL TOKEN SCREENSHOT TOPIC
import { withPage, signIn } from './chromium.mjs';

const [url, token, screenshot, topic] = process.argv.slice(2);
await withPage(url, { width: 1280, height: 900 }, async (page, seen) => {
  if (await signIn(page, await page.goto(url + 'sql'), token, seen)) {
    await page.goto(url + 'sql');
  }
  await page.fill('#tables', '');
  const offered = page.locator(`#registrylist li[data-topic="${topic}"]`);
  await offered.locator('button[data-add]').waitFor({ timeout: 20000 });
  seen.offered = await offered.locator('.cols').textContent();
  await offered.locator('button[data-add]').click();
  await page.locator(`#tablelist li[data-table="${topic}"]`).waitFor({ timeout: 20000 });
  seen.tables = await page.locator('#tablelist li').evaluateAll(ls => ls.map(l => l.dataset.table));
  seen.ddl = await page.inputValue('#tables');
  await page.click('#query');
  await page.keyboard.type('SELECT cus');
  await page.locator('#complete li').first().waitFor({ timeout: 5000 });
  seen.choices = await page.locator('#complete li').evaluateAll(ls => ls.map(l => l.firstChild.textContent));
  await page.screenshot({ path: screenshot, fullPage: true });
  await page.keyboard.press('Tab');
  seen.query = await page.inputValue('#query');
});
