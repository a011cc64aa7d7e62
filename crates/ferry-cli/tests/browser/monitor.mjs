// Loads the console's Monitoring page in headless Chromium (signing in with the token) and walks
// its views for one cluster: Overview, Brokers, Topics, a Topic, Consumer groups, a Group (with
// its lag chart) and Alerts; saves a screenshot of each and prints what it saw as JSON, with the
// longest main-thread task seen while the page refreshed.
// Usage: node monitor.mjs URL TOKEN SCREENSHOT_PREFIX CLUSTER GROUP TOPIC
import { withPage, signIn } from './chromium.mjs';

const [url, token, shots, cluster, group, topic] = process.argv.slice(2);
await withPage(url, { width: 1400, height: 1000 }, async (page, seen) => {
  if (await signIn(page, await page.goto(url + 'monitor'), token, seen)) {
    await page.goto(url + 'monitor');
  }
  await page.evaluate(() => {
    window.__longest = 0;
    new PerformanceObserver(list => list.getEntries().forEach(e => { window.__longest = Math.max(window.__longest, e.duration); })).observe({ type: 'longtask', buffered: true });
  });
  const view = async (hash, ready, name) => {
    await page.goto(url + 'monitor#' + new URLSearchParams(Object.assign({ c: cluster }, hash)));
    await page.locator(ready).first().waitFor({ timeout: 20000 });
    await page.screenshot({ path: `${shots}-${name}.png`, fullPage: true });
  };
  await view({ v: 'overview' }, '#cards .card', 'overview');
  seen.cards = await page.locator('#cards .card').allTextContents();
  await view({ v: 'brokers' }, 'main table tbody tr', 'brokers');
  seen.brokers = await page.locator('main table tbody tr').count();
  // The canary's latency shows once it has samples (refreshes every 5 s).
  await page.waitForFunction(() => [...document.querySelectorAll('td.canary')].some(td => td.textContent.endsWith(' ms')), null, { timeout: 20000 }).catch(() => {});
  seen.canary = await page.locator('td.canary').allTextContents();
  await view({ v: 'topics' }, `tr[data-t="${topic}"]`, 'topics');
  await page.locator(`tr[data-t="${topic}"]`).click();
  await page.locator('#consumers').waitFor({ timeout: 20000 });
  seen.topicPartitions = await page.locator('main table').first().locator('tbody tr').count();
  seen.consumers = await page.locator('#consumers').textContent();
  seen.configs = await page.locator('#configs tr').allTextContents();
  await page.screenshot({ path: `${shots}-topic.png`, fullPage: true });
  await view({ v: 'groups' }, `tr[data-g="${group}"]`, 'groups');
  seen.groupRow = await page.locator(`tr[data-g="${group}"] td`).allTextContents();
  await page.locator(`tr[data-g="${group}"]`).click();
  await page.locator('#lagchart').waitFor({ timeout: 20000 });
  await page.locator('#lagchart polyline').first().waitFor({ timeout: 30000 });
  seen.chartLines = await page.locator('#lagchart polyline').count();
  seen.partitionRows = await page.locator('main table').first().locator('tbody tr').allTextContents();
  await page.screenshot({ path: `${shots}-group.png`, fullPage: true });
  await view({ v: 'alerts' }, 'main section h2', 'alerts');
  seen.alertSections = await page.locator('main section h2').allTextContents();
  seen.policies = await page.locator('main code').allTextContents();
  // Two refreshes (every 5 s) on the heaviest view, then the longest task.
  await view({ v: 'groups' }, `tr[data-g="${group}"]`, 'groups-again');
  await page.waitForTimeout(11000);
  seen.longestTaskMs = await page.evaluate(() => window.__longest);
});
