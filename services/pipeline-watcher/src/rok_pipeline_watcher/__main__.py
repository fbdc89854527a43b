from rok_pipeline_watcher.main import main

main()
