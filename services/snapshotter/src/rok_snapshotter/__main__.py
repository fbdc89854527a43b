from rok_snapshotter.main import main

main()
