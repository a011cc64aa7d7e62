// Loads the console's SQL page in headless Chromium, finds a running Flink job, stops it with a
// savepoint from its row's button, resumes it from there with its resume button, saves a
// screenshot and prints what it saw as JSON.
// Usage: node sql.mjs URL TOKEN SCREENSHOT JOB_ID
import { withPage, signIn } from './chromium.mjs';

const [url, token, screenshot, job] = process.argv.slice(2);
await withPage(url, { width: 1280, height: 700 }, async (page, seen) => {
  if (await signIn(page, await page.goto(url + 'sql'), token, seen)) {
    await page.goto(url + 'sql');
  }
  const row = page.locator(`#jobs tr[data-id="${job}"]`);
  await row.locator('button[data-stop]').waitFor({ timeout: 30000 });
  seen.row = await row.locator('td').allTextContents();
  seen.engines = await page.locator('#jobs tbody tr').evaluateAll(rs => rs.map(r => r.dataset.engine));
  await row.locator('button[data-stop]').click();
  await page.locator('#savepoint').waitFor({ timeout: 120000 });
  seen.savepoint = await page.locator('#savepoint').textContent();
  await page.waitForFunction(id => document.querySelector(`#jobs tr[data-id="${id}"] td.state`)?.textContent === 'finished', job, { timeout: 30000 });
  seen.state = await row.locator('td.state').textContent();
  await row.locator('button[data-restart]').waitFor({ timeout: 30000 });
  seen.resume = await row.locator('button[data-restart]').textContent();
  await row.locator('button[data-restart]').click();
  await page.locator('#restarted').waitFor({ timeout: 120000 });
  seen.restarted = await page.locator('#restarted').textContent();
  await page.waitForFunction(id => document.querySelector(`#jobs tr[data-id="${id}"] td.state`)?.textContent === 'running', seen.restarted, { timeout: 60000 });
  seen.restartedRow = await page.locator(`#jobs tr[data-id="${seen.restarted}"] td`).allTextContents();
  await page.screenshot({ path: screenshot, fullPage: true });
});
