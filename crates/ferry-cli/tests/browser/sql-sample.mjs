// The console's SQL page in headless Chromium: a job file's tables are listed, a query over them
// is sampled and its rows stream into the table; saves a screenshot, prints what it saw as JSON.
// Usage: node sql-sample.mjs URL TOKEN SCREENSHOT TABLES QUERY
import { withPage, signIn } from './chromium.mjs';

const [url, token, screenshot, tables, query] = process.argv.slice(2);
await withPage(url, { width: 1280, height: 900 }, async (page, seen) => {
  if (await signIn(page, await page.goto(url + 'sql'), token, seen)) {
    await page.goto(url + 'sql');
  }
  await page.fill('#tables', tables);
  await page.click('#load');
  await page.locator('#tablelist li[data-table="big"]').waitFor({ timeout: 20000 });
  seen.tables = await page.locator('#tablelist li').evaluateAll(ls => ls.map(l => l.dataset.table));
  await page.fill('#query', query);
  await page.fill('#limit', '1000');
  await page.click('#run');
  await page.waitForFunction(() => document.getElementById('sampled').textContent.includes('done'), null, { timeout: 60000 });
  seen.header = await page.locator('#rows thead th').allTextContents();
  seen.rows = await page.locator('#rows tbody tr').evaluateAll(rs => rs.map(r => [...r.cells].map(c => c.textContent)));
  seen.error = await page.locator('#sampleError').textContent();
  if (seen.error) seen.errors.push('sample error: ' + seen.error);
  await page.screenshot({ path: screenshot, fullPage: true });
});
