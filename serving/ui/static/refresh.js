// Pages that follow the server: draw now, then every few seconds until the page is left.

/** Call draw() now and every `seconds`; returns the function that stops it. Errors go to
 * notice(); the next successful draw clears them. */
export function every(seconds, draw, notice) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    try {
      await draw();
      notice("");
    } catch (err) {
      notice(err.message);
    }
    if (!stopped) timer = setTimeout(tick, seconds * 1000);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

/** The text a page shows instead of what needs the admin token. */
export function adminOnly(ctx, what) {
  return ctx.management
    ? `${what} needs the admin token: enter it above.`
    : `${what} needs the admin routes, which are off on this server (set MMSERVE_ADMIN_TOKEN).`;
}
