// The run page's log opens on its end, where a failure is written.
document.querySelectorAll("pre.run-log").forEach((log) => { log.scrollTop = log.scrollHeight; });
